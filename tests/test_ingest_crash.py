"""Ingest runs as real processes: killed with SIGKILL right after each of its commits, and a CLI
ingest racing a spark-submit ingest into one lake. Readers see only complete ingests, a re-run
ends exact, and no key is doubled."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import make_config, table, write

from processes import BIN, pipeline_env
from prizeflow import data, lake, snapshots
from prizeflow.ingestion import FAULT_ENV

PROJECT = Path(__file__).resolve().parents[1]


def _movie(movie: int, users, day: str = "2005-01-01") -> str:
    return f"{movie}:\n" + "".join(f"{u},{(u + movie) % 5 + 1},{day}\n" for u in users)


def _cli_ingest(config, source: Path, **env: str) -> subprocess.CompletedProcess:
    args = [str(BIN / "prizeflow"), "ingest", "--source", str(source),
            "--set", f"lake.root={config.lake.root}", "--set", "spark.master=local[2]",
            "--set", "ingest.max_quarantine_fraction=0.5",
            "--set", "spark.conf.spark.sql.shuffle.partitions=2",
            "--set", "spark.conf.spark.ui.enabled=false"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env=pipeline_env(**env))


def _lines_on_disk(source: Path) -> dict[str, int]:
    return {str(p.relative_to(source)): len(p.read_bytes().splitlines())
            for p in source.rglob("*") if p.is_file()}


def _assert_exact(spark, config, source: Path, ratings: int) -> None:
    """Every line of every file accounted for once, and no key twice."""
    rows = table(spark, config, "ratings")
    assert rows.count() == ratings
    assert rows.groupBy("movie_id", "user_id").count().where("count > 1").count() == 0
    manifest = {r.source_file: r for r in table(spark, config, "ingest_files").collect()}
    assert {n: r.lines_read for n, r in manifest.items()} == _lines_on_disk(source)
    for row in manifest.values():
        assert row.lines_read == row.header_lines + row.rows + row.quarantined + row.skipped
    for name, row in manifest.items():
        in_table = table(spark, config, row.target).where(f"source_file = '{name}'").count()
        in_quarantine = table(spark, config, "quarantine").where(
            f"source_file = '{name}'").count()
        assert (in_table, in_quarantine) == (row.rows, row.quarantined), name


# Eight ingest processes of their own (30-90 s each here: JVM start-up, and each rolls back
# what the one before left): with the other real-process tests in `make test-deploy`.
@pytest.mark.deploy
@pytest.mark.spark(process=True)
@pytest.mark.timeout(1800)
def test_a_kill_at_each_commit_leaves_readers_on_the_last_complete_ingest(spark, tmp_path):
    source = tmp_path / "corpus"
    for movie in (1, 2, 3):
        write(source / "training_set" / f"mv_{movie:07d}.txt", _movie(movie, range(1, 41)))
    write(source / "movie_titles.txt", "1,2001,A\n2,2002,B\n3,2003,C\n")
    write(source / "probe.txt", "1:\n1\n2\n")
    write(source / "qualifying.txt", "2:\n50,2005-09-01\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    first = _cli_ingest(config, source)
    assert first.returncode == 0, first.stderr[-3000:]
    published = snapshots.latest(spark, config.lake.root)
    before = data.load_training_data(spark, config)
    assert before.ratings.count() == 120 and before.probe.count() == 2

    # A change that touches every table: new ratings (one a duplicate, one bad), a new title,
    # probe and qualifying pairs.
    write(source / "training_set" / "mv_0000004.txt",
          _movie(4, range(1, 31)) + "1,9,2005-01-01\n")
    write(source / "training_set" / "mv_0000005.txt", "1:\n1,3,2005-01-01\n")
    write(source / "movie_titles.txt", "1,2001,A\n2,2002,B\n3,2003,C\n4,2004,D\n")
    write(source / "probe.txt", "1:\n1\n2\n4:\n3\n")
    write(source / "qualifying.txt", "2:\n50,2005-09-01\n4:\n51,2005-09-02\n")

    for boundary in ("ratings", "movies", "probe", "qualifying", "quarantine", "ingest_files"):
        killed = _cli_ingest(config, source, **{FAULT_ENV: boundary})
        assert killed.returncode == -9, (boundary, killed.stderr[-3000:])
        assert f"killing this process after the {boundary} commit" in killed.stderr
        # What train reads: still the last complete ingest, all tables at its versions.
        assert snapshots.latest(spark, config.lake.root) == published
        reader = data.load_training_data(spark, config)
        assert reader.version == before.version and reader.probe_version == before.probe_version
        assert reader.ratings.count() == 120 and reader.probe.count() == 2

    rerun = _cli_ingest(config, source)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "rolled back" in rerun.stderr  # the last kill's commits were undone first
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["ratings"] == 150 and summary["quarantine_reasons"] == {
        "bad_rating": 1, "duplicate": 1}
    assert summary["movies"] == 4 and summary["probe"] == 3 and summary["qualifying"] == 2
    _assert_exact(spark, config, source, 150)
    after = data.load_training_data(spark, config)
    assert after.ratings.count() == 150 and after.probe.count() == 3
    assert after.snapshot.seq == published.seq + 1


@pytest.mark.deploy
@pytest.mark.spark(process=True)
def test_a_cli_ingest_and_a_spark_submit_ingest_into_one_lake_take_turns(spark, tmp_path):
    """The two ways users start an ingest (the DAG runs spark-submit), at once, on overlapping
    sources: movie 3's ratings are in both (in files of different names)."""
    import pyspark

    from prizeflow.spark import delta_package

    for movie in (1, 2, 3):
        write(tmp_path / "a" / "training_set" / f"mv_{movie:07d}.txt", _movie(movie, range(1, 41)))
    write(tmp_path / "b" / "training_set" / "mv_0000009.txt", _movie(3, range(1, 41)))
    write(tmp_path / "b" / "training_set" / "mv_0000004.txt", _movie(4, range(1, 41)))
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    common = ["--set", f"lake.root={config.lake.root}", "--set", "ingest.max_quarantine_fraction=0.5",
              "--set", "spark.conf.spark.sql.shuffle.partitions=2",
              "--set", "spark.conf.spark.ui.enabled=false"]
    cli = subprocess.Popen([str(BIN / "prizeflow"), "ingest", "--source", str(tmp_path / "a"),
                            "--set", "spark.master=local[1]", *common],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=pipeline_env())
    submitted = subprocess.Popen([str(BIN / "spark-submit"), "--master", "local[1]",
                                  "--packages", delta_package(pyspark.__version__),
                                  str(PROJECT / "jobs" / "ingest.py"),
                                  "--source", str(tmp_path / "b"), *common],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=pipeline_env(), cwd=tmp_path)
    outputs = [process.communicate(timeout=900) for process in (cli, submitted)]
    for process, (out, err) in zip((cli, submitted), outputs):
        assert process.returncode == 0, err[-3000:]
        # Both took the lake's own lock: the file beside the tables, however they were started.
        assert f"ingest lock: the file {tmp_path / 'lake' / '_ingest.lock'}" in out + err

    rows = table(spark, config, "ratings")
    assert rows.count() == 4 * 40
    assert rows.groupBy("movie_id", "user_id").count().where("count > 1").count() == 0
    quarantine = table(spark, config, "quarantine").collect()
    assert len(quarantine) == 40 and {q.reason for q in quarantine} == {"duplicate"}
    manifest = {r.source_file: r.lines_read for r in table(spark, config, "ingest_files").collect()}
    on_disk = {**_lines_on_disk(tmp_path / "a"), **_lines_on_disk(tmp_path / "b")}
    assert manifest == on_disk
    # Each complete ingest was published: two snapshots, the second over the first.
    assert snapshots.latest(spark, config.lake.root).seq == 2
    assert lake.version(spark, lake.table_path(config.lake.root, "ratings")) is not None
