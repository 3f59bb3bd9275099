"""An ingest with nothing new is answered without Spark, and only while the tables' own logs and
the source agree with the record the last ingest left (prizeflow.unchanged)."""

import json
import os
import subprocess

import pytest

from prizeflow import ingestion, snapshots, unchanged
from prizeflow.generate import generate_corpus, make_spec

from conftest import make_config, write
from processes import BIN, pipeline_env

pytestmark = pytest.mark.spark


@pytest.fixture
def ingested(spark, tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(make_spec(corpus, 2_000, users=200, movies=20, seed=3,
                              layout="combined_data"))
    config = make_config(tmp_path)
    first = ingestion.ingest(spark, config, str(corpus))
    return {"config": config, "corpus": corpus, "first": first,
            "record": tmp_path / "lake" / unchanged.RECORD}


def _plan(data):
    return ingestion.find_source(str(data["corpus"]))


def _assert_record_is_the_manifest(spark, config, record):
    """The record's files are the published manifest's rows, as Spark reads them back."""
    read = ingestion._read_manifest(spark, f"{config.lake.root}/ingest_files")
    files = json.loads(record.read_text())["files"]
    assert files == {name: {"target": row.target, "fingerprint": row.fingerprint,
                            "rows": int(row.rows)} for name, row in read.items()}


def test_the_record_is_the_published_ingest(spark, ingested):
    config, first = ingested["config"], ingested["first"]
    content = json.loads(ingested["record"].read_text())
    published = snapshots.latest(spark, config.lake.root)
    assert content["ingest_id"] == published.ingest_id == first["ingest_id"]
    assert {t: content["versions"][t] for t in snapshots.INGESTED} == published.versions
    assert sum(f["rows"] for f in content["files"].values() if f["target"] == "ratings") == \
        first["ratings"] == 2_000
    _assert_record_is_the_manifest(spark, config, ingested["record"])
    manifest, snapshot = unchanged.unchanged_since_record(config, _plan(ingested))
    assert snapshot.versions == published.versions and snapshot.seq == published.seq
    assert set(manifest) == {f.name for f in _plan(ingested).files}


def test_a_no_op_ingest_as_a_process_starts_no_jvm(ingested, tmp_path):
    """The whole `prizeflow ingest` with nothing new: java here is a stand-in that fails, so the
    run succeeds only if no JVM is started; its summary is the published ingest's."""
    java_home = tmp_path / "no-java"
    write(java_home / "bin" / "java", "#!/bin/sh\necho 'no JVM in this test' >&2\nexit 1\n")
    (java_home / "bin" / "java").chmod(0o755)
    env = pipeline_env(JAVA_HOME=str(java_home),
                       PATH=f"{java_home / 'bin'}{os.pathsep}{pipeline_env()['PATH']}")
    config = ingested["config"]
    result = subprocess.run(
        [str(BIN / "prizeflow"), "ingest", "--source", str(ingested["corpus"]),
         "--set", f"lake.root={config.lake.root}", "--set", "spark.master=local[2]"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads(result.stdout.strip().splitlines()[-1])
    first = ingested["first"]
    assert again["nothing_ingested"] is True and first["nothing_ingested"] is False
    assert again["files_ingested"] == 0 and again["files_unchanged"] == first["files_ingested"]
    for key in ("ratings", "movies", "probe", "qualifying", "ingest_id", "delta_versions",
                "format"):
        assert again[key] == first[key], key
    assert "SparkSession up" not in result.stderr
    assert "none new or changed (checked without Spark" in result.stderr


def test_anything_the_record_does_not_know_goes_to_spark(spark, ingested):
    """One lake through five changes in turn: each makes the check without Spark step aside,
    and the ingest with Spark still gives the right answer (and leaves a record that agrees)."""
    config, corpus, record = ingested["config"], ingested["corpus"], ingested["record"]
    files = sorted(p for p in corpus.rglob("combined_data_*.txt"))

    def change_and_ingest(change):
        assert unchanged.unchanged_since_record(config, _plan(ingested)) is None, change
        assert ingestion.summary_without_spark(config, str(corpus)) is None, change
        return ingestion.ingest(spark, config, str(corpus))

    with open(files[0], "a", encoding="utf-8") as out:
        out.write("99999,4,2005-09-06\n")
    assert change_and_ingest("changed file")["files_ingested"] == 1
    assert unchanged.unchanged_since_record(config, _plan(ingested)) is not None
    _assert_record_is_the_manifest(spark, config, record)

    write(corpus / "combined_data_9.txt", "1:\n99998,3,2005-01-01\n")
    assert change_and_ingest("new file")["files_ingested"] == 1
    _assert_record_is_the_manifest(spark, config, record)

    record.write_text("{not json")
    assert change_and_ingest("unreadable record")["nothing_ingested"] is True
    assert json.loads(record.read_text())["files"]  # the Spark path wrote it again

    (corpus / "combined_data_9.txt").unlink()
    missing = change_and_ingest("missing file")
    assert missing["files_missing"] == 1 and missing["nothing_ingested"] is True
    assert record.exists() and ingestion.summary_without_spark(config, str(corpus)) is None
    write(corpus / "combined_data_9.txt", "1:\n99998,3,2005-01-01\n")  # the same bytes back
    assert ingestion.summary_without_spark(config, str(corpus))["nothing_ingested"] is True

    spark.sql(f"ALTER TABLE delta.`{config.lake.root}/movies` "
              "SET TBLPROPERTIES ('prizeflow.test' = 'outside')")
    assert change_and_ingest("commit outside prizeflow")["nothing_ingested"] is True
    # Rolled back to the published version by a new commit: the tables no longer agree with
    # the published snapshot's versions, so no record until the next ingest publishes.
    assert not record.exists()
