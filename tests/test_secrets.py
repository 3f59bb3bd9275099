"""The redaction policy (prizeflow.secrets), form by form, and where it is applied: config dumps,
``--set`` errors, the champion gate's record of a run's lake, the driver JVM's stderr as
prizeflow passes it on, Spark's own redaction."""

from __future__ import annotations

import os

import pytest

from prizeflow import driver_stderr, gate
from prizeflow import secrets as secrets_module
from prizeflow.config import ConfigError, describe, load_config
from prizeflow.secrets import (MASK, SPARK_DEFAULT_REDACTION_REGEX, is_secret_name, redact,
                               redact_text, spark_redaction_settings)

S = "Zq9/x@Y+w"  # a secret with the characters that broke the old patterns: '/', '@', '+'

# (what is written, what may be shown): every form the policy covers.
FORMS = [
    # credentials in a URI
    (f"https://user:{S}@mlflow.example.com/api", "https://***@mlflow.example.com/api"),
    ("https://user:ab/cd@host/x", "https://***@host/x"),
    ("https://user:p@ss@host:8443/x", "https://***@host:8443/x"),
    (f"s3a://AKIAIOSFODNN7EXAMPLE:{S}@bucket/lake", "s3a://***@bucket/lake"),
    ("jdbc:postgresql://etl:hunter2@db.internal:5432/mlflow",
     "jdbc:postgresql://***@db.internal:5432/mlflow"),
    ("ftp://anonymous@files.example.com/pub", "ftp://***@files.example.com/pub"),
    (f"'http://bob:{S}@127.0.0.1:5000' did not answer", "'http://***@127.0.0.1:5000' did not answer"),
    # secret query parameters
    (f"https://acct.blob.core.windows.net/c?sv=2020&sig={S}&se=2", "https://acct.blob.core.windows.net/c?sv=2020&sig=***&se=2"),
    ("https://idp/token?client_id=app&client_secret=abc123&scope=x",
     "https://idp/token?client_id=app&client_secret=***&scope=x"),
    ("https://api.example.com/v1?api_key=k-123&q=1", "https://api.example.com/v1?api_key=***&q=1"),
    ("https://api.example.com/cb?access_token=t.1.2&state=s", "https://api.example.com/cb?access_token=***&state=s"),
    ("https://b.s3.amazonaws.com/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=abcd&X-Amz-Date=1",
     "https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=1"),
    (f"sc://spark.example.com:443/;token={S};user_id=me", "sc://spark.example.com:443/;token=***;user_id=me"),
    # secret settings, as config, Spark and JSON write them
    (f"spark.hadoop.fs.s3a.secret.key={S} next", "spark.hadoop.fs.s3a.secret.key=*** next"),
    (f"fs.azure.account.key.acct.dfs.core.windows.net -> {S}",
     "fs.azure.account.key.acct.dfs.core.windows.net -> ***"),
    (f"spark.hadoop.fs.s3a.access.key: AKIA0000", "spark.hadoop.fs.s3a.access.key: ***"),
    ('{"password": "two words", "user": "ann"}', '{"password": "***", "user": "ann"}'),
    ("db_pwd=letmein;host=h", "db_pwd=***;host=h"),
    ("private_key: '-----BEGIN'", "private_key: '***'"),
    # authorization values
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: Bearer ***"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    # tokens known by their shape, with no name beside them
    ("token dapi0123456789abcdef0123456789abcdef-2 used", "token *** used"),
    ("key id AKIAIOSFODNN7EXAMPLE", "key id ***"),
    ("pushed with ghp_0123456789abcdefghijABCDEFGHIJ012345", "pushed with ***"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "jwt ***"),
    ("slack xoxb-1234-5678-abcdefghij", "slack ***"),
]

# Texts that hold no secret and must come out unchanged.
KEPT = [
    "https://host/users/@me",
    "http://127.0.0.1:5000/api/2.0/mlflow",
    "s3a://bucket/lake/ratings",
    "prizeflow train: error: step train: lake.root must be set",
    "--set expects dotted.name=value, got 'x'",
    "train.grid.rank=20 split.method=probe",
    "ingest: 100 lines, quarantine reasons no_header=2",
]


@pytest.mark.parametrize(("text", "shown"), FORMS, ids=[f"form{i}" for i in range(len(FORMS))])
def test_every_form_of_secret_is_masked(text, shown):
    assert redact_text(text) == shown


def test_the_table_covers_at_least_twenty_forms():
    assert len(FORMS) >= 20 and all(MASK in shown for _, shown in FORMS)


@pytest.mark.parametrize("text", KEPT)
def test_text_without_secrets_is_kept(text):
    assert redact_text(text) == text


@pytest.mark.parametrize(("name", "secret"), [
    ("spark.hadoop.fs.s3a.secret.key", True), ("fs.azure.account.key.a.dfs.core.windows.net", True),
    ("spark.hadoop.fs.s3a.access.key", True), ("client_secret", True), ("api_key", True),
    ("apikey", True), ("x-amz-signature", True), ("sig", True), ("db_pwd", True),
    ("spark.ssl.keyPassword", True), ("MLFLOW_TRACKING_TOKEN", True),
    ("lake.root", False), ("train.grid.rank", False), ("spark.driver.memory", False),
    ("keys_per_batch", False), ("monkey", False)])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret
    if secret:
        # redact_text looks for named secrets only in text holding one of these words: the
        # cheap pre-check must let every secret name through.
        assert any(word in name.lower() for word in secrets_module._SECRET_NAME_WORDS)


def test_mappings_mask_values_under_secret_names_and_credentials_in_strings():
    value = {"token": "t", "nested": {"client_secret": "c", "uri": f"https://u:{S}@h"},
             "list": [f"s3a://k:{S}@b/x"], "empty_password": "", "rank": 20}
    assert redact(value) == {"token": MASK, "nested": {"client_secret": MASK,
                                                       "uri": "https://***@h"},
                             "list": ["s3a://***@b/x"], "empty_password": "", "rank": 20}


def test_the_config_dump_and_set_errors_show_no_secret():
    config = load_config(None, [f"mlflow.tracking_uri=https://bob:{S}@mlflow.example.com",
                                f"spark.conf.spark.hadoop.fs.s3a.secret.key={S}",
                                "spark.conf.fs.azure.account.key.acct.dfs.core.windows.net=0777"])
    # A secret setting keeps its text: YAML would have read 0777 as the number 511.
    assert config.spark.conf["fs.azure.account.key.acct.dfs.core.windows.net"] == "0777"
    dumped = describe(config)
    assert S not in dumped and "0777" not in dumped and "https://***@mlflow.example.com" in dumped
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"train.grid.rank=[{S}\n  more"])
    message = str(caught.value)
    assert "\n" not in message and S not in message and "train.grid.rank" in message


def test_lakes_differing_only_in_a_masked_part_have_different_test_sets():
    """abfss://lakeA@acct and abfss://lakeB@acct look alike once credentials are masked: the
    champion gate's signature hashes the exact identity, and nothing secret is stored."""
    def params(root):
        identity = gate.DataIdentity(root, "t", f"{root}/ratings", 3, None, None, None)
        return identity.params("hash", {"seed": 42})

    a = params("abfss://lakeA@acct.dfs.core.windows.net/p")
    b = params("abfss://lakeB@acct.dfs.core.windows.net/p")
    assert a["gate.lake_root"] == b["gate.lake_root"] == "abfss://***@acct.dfs.core.windows.net/p"
    assert a["gate.split"] != b["gate.split"] and a["gate.lake"] != b["gate.lake"]
    secret = params("s3a://AKIA:s3cr3t@bucket/lake")
    assert all("s3cr3t" not in value for value in secret.values())


def test_jvm_stderr_is_passed_on_with_secrets_masked(tmp_path):
    read_end, write_end = os.pipe()
    out = tmp_path / "stderr.txt"
    lines = [f"26/12/06 INFO Client: connecting to https://svc:{S}@store.example.com\n",
             f"spark.hadoop.fs.s3a.secret.key -> {S}\n", "an ordinary line\n"]
    with open(out, "wb") as target:
        os.write(write_end, "".join(lines).encode())
        os.close(write_end)
        driver_stderr.pass_on(read_end, target.fileno())
    text = out.read_text()
    assert S not in text
    assert text.splitlines() == ["26/12/06 INFO Client: connecting to https://***@store.example.com",
                                 "spark.hadoop.fs.s3a.secret.key -> ***", "an ordinary line"]


def test_spark_redaction_is_extended_not_replaced():
    settings = spark_redaction_settings({})
    names = settings["spark.redaction.regex"]
    assert names.startswith(f"(?:{SPARK_DEFAULT_REDACTION_REGEX})|")
    own = spark_redaction_settings({"spark.redaction.regex": "(?i)mytoken",
                                    "spark.redaction.string.regex": "hunter2"})
    assert own["spark.redaction.regex"].startswith("(?:(?i)mytoken)|")
    assert own["spark.redaction.string.regex"].startswith("(?:hunter2)|")


@pytest.mark.spark
def test_spark_hides_the_keys_prizeflow_hides(spark):
    """Spark's own redaction, in the session prizeflow built: the settings Spark shows (its UI,
    event logs) with its pattern, applied by Spark's own code."""
    sc = spark.sparkContext
    regex = sc.getConf().get("spark.redaction.regex")
    assert regex.startswith(f"(?:{SPARK_DEFAULT_REDACTION_REGEX})|")
    pattern = sc._jvm.java.util.regex.Pattern.compile(regex)
    for key in ("fs.azure.account.key.acct.dfs.core.windows.net", "spark.hadoop.fs.s3a.secret.key",
                "spark.databricks.token", "client_secret", "spark.ssl.keyPassword"):
        assert pattern.matcher(key).find(), key
    for key in ("spark.driver.memory", "spark.sql.shuffle.partitions"):
        assert not pattern.matcher(key).find(), key
    # Spark's own code, with the session's conf: what the UI's Environment page and the event
    # log show of the settings.
    conf = sc._jsc.sc().conf().clone()
    conf.set("fs.azure.account.key.acct.dfs.core.windows.net", S)
    jvm = sc._jvm
    listed = jvm.java.util.ArrayList()
    for pair in conf.getAll():
        listed.add(pair)
    pairs = jvm.org.apache.spark.api.python.PythonUtils.toSeq(listed)
    redacted = jvm.org.apache.spark.util.Utils.redact(conf, pairs)
    shown = {redacted.apply(i)._1(): redacted.apply(i)._2() for i in range(redacted.size())}
    assert shown["fs.azure.account.key.acct.dfs.core.windows.net"] != S
    assert S not in str(list(shown.values()))
