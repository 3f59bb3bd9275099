"""Sources and the lake on object storage: a real S3 server (versitygw, posix backend, built by
`make s3-server`) on 127.0.0.1, reached by Hadoop's S3A connector from Maven Central, with the
credentials only in the standard AWS environment variables. `prizeflow ingest` reads a corpus from
a bucket into a lake on another bucket, an object changed through the S3 API is the only one read
again, and the secret key shows up nowhere."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from processes import (BIN, free_port, generate_corpus, pipeline_env, start_daemon,
                       stop_daemon, wait_until)

pytestmark = [pytest.mark.deploy, pytest.mark.spark(process=True)]  # ingest commands

PROJECT = Path(__file__).resolve().parents[1]
SERVER = PROJECT / ".tools" / "bin" / "versitygw"
# S3A for pyspark 4.2's Hadoop 3.5.0, without the 686 MB AWS SDK bundle: the two SDK modules
# S3A loads (52 MB with Delta), on the netty that Spark already ships.
S3A_PACKAGES = ["org.apache.hadoop:hadoop-aws:3.5.0", "software.amazon.awssdk:s3:2.35.4",
                "software.amazon.awssdk:s3-transfer-manager:2.35.4"]
S3A_EXCLUDES = "software.amazon.awssdk:bundle,io.netty:*,org.wildfly.openssl:wildfly-openssl"


def _answers_http(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # an unsigned request is refused: the server is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint, the folder behind the buckets, credentials env) of a running S3 server."""
    assert SERVER.exists(), f"{SERVER} is missing: run `make s3-server`"
    root = tmp_path_factory.mktemp("s3root")
    for bucket in ("corpus", "lake"):
        (root / bucket).mkdir()
    credentials = {"AWS_ACCESS_KEY_ID": "prizeflow-test",
                   "AWS_SECRET_ACCESS_KEY": f"secret-{secrets.token_hex(12)}"}
    port = free_port()
    log = root.parent / f"{root.name}.log"
    server = start_daemon(
        [SERVER, "--port", f"127.0.0.1:{port}", "--quiet", "posix",
         # objects placed in the folder by hand (the corpus below) get an ETag, which S3A needs
         "--default-etag", "0" * 32, root],
        log, pipeline_env(ROOT_ACCESS_KEY_ID=credentials["AWS_ACCESS_KEY_ID"],
                          ROOT_SECRET_ACCESS_KEY=credentials["AWS_SECRET_ACCESS_KEY"]))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers_http(endpoint), "S3 server", [server], [log], timeout=30)
        yield endpoint, root, credentials
    finally:
        stop_daemon(server)


def _settings(endpoint: str, lake_root: str, tracking_uri: str) -> list[str]:
    settings = {"lake.root": lake_root, "mlflow.tracking_uri": tracking_uri,
                "spark.master": "local[2]",
                "spark.packages": json.dumps(S3A_PACKAGES),
                "spark.conf.spark.jars.excludes": S3A_EXCLUDES,
                "spark.conf.spark.hadoop.fs.s3a.endpoint": endpoint,
                "spark.conf.spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
                "spark.conf.spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.conf.spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _ingest(source: str, settings: list[str], env: dict[str, str], cwd: Path):
    return subprocess.run([str(BIN / "prizeflow"), "ingest", "--source", source, *settings],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def _put(endpoint: str, key: str, body: bytes, credentials: dict[str, str]) -> None:
    """An S3 PutObject signed with SigV4 (curl signs it), as any S3 client would write."""
    result = subprocess.run(
        ["curl", "-sS", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3",
         "--user", f"{credentials['AWS_ACCESS_KEY_ID']}:{credentials['AWS_SECRET_ACCESS_KEY']}",
         "-H", f"x-amz-content-sha256: {hashlib.sha256(body).hexdigest()}",
         "-X", "PUT", "--data-binary", "@-", f"{endpoint}/{key}"],
        input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_ingest_from_a_bucket_into_a_lake_on_a_bucket(s3, tmp_path):
    endpoint, root, credentials = s3
    corpus = root / "corpus" / "netflix"
    generate_corpus(corpus, 20000, 500, 120, 5, "--layout", "combined_data")
    files = sorted(p.name for p in corpus.iterdir())
    env = pipeline_env(**credentials)
    settings = _settings(endpoint, "s3a://lake/prizeflow", f"sqlite:///{tmp_path / 'mlflow.db'}")

    first = _ingest("s3a://corpus/netflix", settings, env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["ratings"] == 20000 and summary["quarantined"] == 0
    assert summary["files_ingested"] == len(files) and summary["files_unchanged"] == 0
    # The lake is Delta on the bucket: its commits are objects under the lake bucket.
    assert (root / "lake" / "prizeflow" / "ratings" / "_delta_log").is_dir()
    assert (root / "lake" / "prizeflow" / "ingest_files" / "_delta_log").is_dir()

    # Change one object through the S3 API: one good rating and one bad line appended.
    changed = corpus / "combined_data_2.txt"
    text = changed.read_text()
    assert "\n2649428," not in text
    _put(endpoint, "corpus/netflix/combined_data_2.txt",
         (text + "2649428,4,2005-12-31\nnot,a,rating\n").encode(), credentials)

    second = _ingest("s3a://corpus/netflix", settings, env, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["files_ingested"] == 1 and again["files_unchanged"] == len(files) - 1
    assert again["lines_read"] == len(text.splitlines()) + 2  # the whole changed file, no other
    assert again["ratings"] == 20001 and again["quarantined"] == 1

    # The corpus copied to another prefix: every object is new to the lister (new times), so
    # each is read; its lines are the lines the lake holds, so nothing is written but the
    # manifest's rows (the new place), and the next ingest skips them without reading.
    shutil.copytree(corpus, root / "corpus" / "netflix-copy", copy_function=shutil.copy)
    third = _ingest("s3a://corpus/netflix-copy", settings, env, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    copied = json.loads(third.stdout.strip().splitlines()[-1])
    assert copied["files_ingested"] == 0 and copied["files_reread_unchanged"] == len(files)
    assert copied["ratings"] == 20001 and copied["quarantined"] == 0
    unchanged = ("ratings", "movies", "probe", "qualifying", "quarantine")
    assert {t: copied["delta_versions"][t] for t in unchanged} == \
        {t: again["delta_versions"][t] for t in unchanged}
    fourth = json.loads(_ingest("s3a://corpus/netflix-copy", settings, env, tmp_path)
                        .stdout.strip().splitlines()[-1])
    assert fourth["files_unchanged"] == len(files) and fourth["files_reread_unchanged"] == 0
    assert fourth["lines_read"] == 0

    missing = _ingest("s3a://corpus/nothing-here", settings, env, tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        "prizeflow ingest: error: source not found: s3a://corpus/nothing-here")

    for result in (first, second, missing):
        assert credentials["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
