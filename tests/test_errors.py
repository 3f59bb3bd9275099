"""Errors a user or operator meets, each in one line naming its cause and its object, before any
Spark work; and secrets that never reach an output. Each case fails in a second or two: no JVM."""

import os
import socket
import subprocess

import pytest

from prizeflow.config import ConfigError, describe, load_config
from prizeflow.secrets import redact, redact_text
from prizeflow.sources import discover

from processes import BIN, pipeline_env

SECRET = "FAKE-s3cr3t-4242"


def _prizeflow(*args, cwd=None):
    result = subprocess.run([str(BIN / "prizeflow"), *map(str, args)], cwd=cwd,
                            env=pipeline_env(), capture_output=True, text=True, timeout=300)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result, last


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_a_config_file_that_is_not_yaml_names_the_file_and_the_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("lake:\n  root: [x\nsplit: 1\n")
    with pytest.raises(ConfigError, match=rf"config file {broken}, line 3 column 6, is not valid"):
        load_config(broken)
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result, last = _prizeflow("train", "--conf", binary)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) <= 3
    assert last == (f"prizeflow train: error: config file {binary} is not UTF-8 text "
                    "(byte 0x89 at offset 0): is it a YAML file?")


def _one_movie_corpus(tmp_path):
    source = tmp_path / "corpus"
    (source / "training_set").mkdir(parents=True)
    (source / "training_set" / "mv_0000001.txt").write_text("1:\n1,3,2005-01-01\n")
    return source


def test_an_unreadable_source_file_is_named_before_spark_starts(tmp_path):
    source = _one_movie_corpus(tmp_path)
    # A link inside the source whose file is gone (a link out of it is refused as such).
    os.symlink(source / "gone.txt", source / "training_set" / "mv_0000002.txt")
    result, last = _prizeflow("ingest", "--source", source, "--set",
                              f"lake.root={tmp_path / 'lake'}")
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last == (f"prizeflow ingest: error: cannot read source file "
                    f"{source / 'training_set' / 'mv_0000002.txt'}: No such file or directory")


def test_a_lake_that_cannot_be_written_is_named_before_spark_starts(tmp_path):
    source = _one_movie_corpus(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result, last = _prizeflow("ingest", "--source", source, "--set",
                              f"lake.root={blocker / 'lake'}")
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last == (f"prizeflow ingest: error: cannot write to lake.root {blocker / 'lake'}: "
                    f"{blocker} is not a writable folder")


def test_cheap_mistakes_are_caught_before_spark_starts(tmp_path):
    empty = tmp_path / "lake"
    result, last = _prizeflow("train", "--set", f"lake.root={empty}", cwd=tmp_path)
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last == (f"prizeflow train: error: no ratings table at {empty / 'ratings'}: "
                    "run `prizeflow ingest` first")
    result, last = _prizeflow("recommend", "--top", "0", cwd=tmp_path)
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last == "prizeflow recommend: error: --top must be at least 1, got 0"
    bare = subprocess.run([str(BIN / "prizeflow")], env=pipeline_env(), capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode == 2 and bare.stdout == "" and "usage" in bare.stderr.lower()


def test_symlink_loops_are_reported_and_not_followed(tmp_path, caplog):
    source = tmp_path / "corpus"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "u.data").write_text("1\t1\t3\t881250949\n")
    os.symlink(source, source / "sub" / "back")  # a loop, 40 levels deep when followed
    os.symlink(source / "sub", source / "again")  # a second way to the same files
    plan = discover(str(source))
    assert [f.path for f in plan.files] == [f"file:{source / 'sub' / 'u.data'}"]
    assert "not following" in caplog.text and str(source / "sub" / "back") in caplog.text
    assert str(source / "again") in caplog.text


def test_an_unreachable_tracking_server_fails_in_seconds_naming_it_without_credentials():
    url = f"http://alice:{SECRET}@127.0.0.1:{_closed_port()}"
    result, last = _prizeflow("register", "--set", f"mlflow.tracking_uri={url}",
                              "--set", "mlflow.timeout_seconds=2")
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last.startswith(f"prizeflow register: error: MLflow tracking server "
                           f"http://***@127.0.0.1:{url.rsplit(':', 1)[1]} did not answer within 2 s")
    assert SECRET not in result.stdout + result.stderr


def test_secrets_are_masked_in_the_config_dump_logs_and_errors(tmp_path):
    config = load_config(None, [
        f"mlflow.tracking_uri=https://bob:{SECRET}@mlflow.example.com",
        f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}",
        f"spark.conf.fs.azure.account.key.acct.dfs.core.windows.net={SECRET}",
        f"lake.root=s3a://AKIAFAKE:{SECRET}@bucket/lake",
        f"spark.conf.spark.hadoop.fs.azure.sas.token={SECRET}?sig={SECRET}"])
    dumped = describe(config)
    assert SECRET not in dumped
    assert "https://***@mlflow.example.com" in dumped and "s3a://***@bucket/lake" in dumped
    assert redact({"password": "", "token": None}) == {"password": "", "token": None}
    assert redact_text(f"sc://host:443/;token={SECRET};user_id=me") == \
        "sc://host:443/;token=***;user_id=me"
    assert redact_text(f"https://x.blob.core.windows.net/c?sv=1&sig={SECRET}&se=2") == \
        "https://x.blob.core.windows.net/c?sv=1&sig=***&se=2"
    # A failing command with secrets in its config: none in anything it prints.
    result, last = _prizeflow("register", "--set", f"mlflow.tracking_uri=http://bob:{SECRET}@"
                              f"127.0.0.1:{_closed_port()}", "--set", "mlflow.timeout_seconds=1",
                              "--set", f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}",
                              cwd=tmp_path)
    assert result.returncode == 1 and "MLflow tracking server http://***@127.0.0.1" in last
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.spark
def test_a_java_failure_is_told_by_its_root_cause(spark):
    from py4j.protocol import Py4JJavaError

    from prizeflow.errors import one_line

    jvm = spark.sparkContext._jvm
    with pytest.raises(Py4JJavaError) as caught:
        jvm.java.nio.file.Files.readAllBytes(jvm.java.io.File("/no/such/ratings.txt").toPath())
    assert "An error occurred while calling" in str(caught.value)
    assert one_line(caught.value) == "java.nio.file.NoSuchFileException: /no/such/ratings.txt"
