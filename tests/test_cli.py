"""The command-line contract other tools rely on: last stdout line is one JSON object, failures
exit non-zero with one line naming the cause; jobs/*.py run the same code under spark-submit."""

import json
import subprocess
from pathlib import Path

import pytest

from processes import BIN, pipeline_env

PROJECT = Path(__file__).resolve().parents[1]


def _run(args, cwd=PROJECT, **kwargs):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=pipeline_env(), capture_output=True,
                          text=True, timeout=600, **kwargs)


def _summary(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_usage_and_unknown_command():
    assert _run([BIN / "prizeflow", "--help"]).returncode == 0
    bad = _run([BIN / "prizeflow", "fly"])
    assert bad.returncode == 2 and "unknown command 'fly'" in bad.stderr


def test_config_errors_are_one_line_naming_the_key(tmp_path):
    result = _run([BIN / "prizeflow", "ingest", "--source", str(tmp_path), "--set", "lake.depth=3"])
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "prizeflow ingest: error: unknown config key 'lake.depth' (from --set lake.depth)")


def test_missing_source_fails_before_spark_starts(tmp_path):
    result = _run([BIN / "prizeflow", "ingest", "--source", str(tmp_path / "absent")])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "prizeflow ingest: error: source not found")
    assert "SparkSession up" not in result.stderr


def test_quiet_and_verbose_change_what_is_logged(tmp_path):
    absent = ["--source", str(tmp_path / "absent")]
    quiet = _run([BIN / "prizeflow", "ingest", *absent, "-q"])
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [
        f"prizeflow ingest: error: source not found: {tmp_path / 'absent'}"]
    normal = _run([BIN / "prizeflow", "ingest", *absent])
    assert " INFO prizeflow.jobs.common: config " in normal.stderr
    assert "resolved config:" not in normal.stderr
    verbose = _run([BIN / "prizeflow", "ingest", *absent, "--verbose"])
    assert " DEBUG prizeflow.jobs.common: resolved config:" in verbose.stderr
    both = _run([BIN / "prizeflow", "ingest", *absent, "-q", "-v"])
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_generate_prints_its_summary(tmp_path):
    summary = _summary(_run([BIN / "prizeflow", "generate", "--out", str(tmp_path / "c"),
                             "--ratings", "5000", "--seed", "4"]))
    assert summary["command"] == "generate" and summary["ratings"] == 5000
    assert len(list((tmp_path / "c" / "training_set").iterdir())) == summary["movies"]


# A spark-submit JVM of its own (~90 s here): with the other spark-submit tests in `make test-deploy`.
@pytest.mark.deploy
@pytest.mark.spark(process=True)
def test_ingest_under_spark_submit_prints_the_summary(tmp_path):
    """The console script and jobs/ingest.py share main(); spark-submit is the harder path."""
    corpus = tmp_path / "corpus"
    _summary(_run([BIN / "prizeflow", "generate", "--out", str(corpus), "--ratings", "20000",
                   "--layout", "combined_data"]))
    from prizeflow.spark import delta_package
    import pyspark
    result = _run([BIN / "spark-submit", "--master", "local[2]",
                   "--packages", delta_package(pyspark.__version__),
                   "--conf", "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1",
                   "jobs/ingest.py", "--source", str(corpus),
                   "--set", f"lake.root={tmp_path / 'lake'}",
                   "--set", "spark.master=local[1]",  # spark-submit's master must win
                   "--set", "spark.conf.spark.sql.shuffle.partitions=2"])
    summary = _summary(result)
    # spark-submit merges the Python driver's stderr into its stdout: look in both.
    assert "SparkSession up: master local[2]" in result.stdout + result.stderr
    assert summary["command"] == "ingest" and summary["ratings"] == 20000
    assert summary["quarantined"] == 0 and summary["files_ingested"] == 7
    assert set(summary) >= {"lines_read", "ratings", "movies", "probe", "qualifying",
                            "quarantined", "quarantine_reasons", "delta_versions", "seconds"}
    assert summary["lines_read"] == 20000 + summary["header_lines"] + summary["movies"] + \
        summary["probe"] + summary["qualifying"]
    # Created (version 0), then written (1); nothing was quarantined, so no quarantine commit.
    assert summary["delta_versions"] == {"ratings": 1, "movies": 1, "probe": 1, "qualifying": 1,
                                         "quarantine": 0, "ingest_files": 1}


@pytest.mark.parametrize("error, line", [
    (ValueError("no ratings table in lake"), "step train: no ratings table in lake"),
    (KeyError("user_id"), "step train: KeyError: 'user_id'"),
])
def test_a_failing_step_is_named_on_the_error_line(capsys, monkeypatch, error, line):
    """`prizeflow run`'s own code path (the step table, pipeline.run, the job's error line),
    with ingest and train replaced: train fails, and the line names it."""
    from prizeflow import pipeline
    from prizeflow.jobs.common import build_parser, run_job

    def failing_train(spark, config, **inputs):
        raise error

    monkeypatch.setattr(pipeline, "ingest", lambda spark, config, **inputs: {"rows": 1})
    monkeypatch.setattr(pipeline, "train", failing_train)
    code = run_job("run", build_parser("run"),
                   lambda spark, config, args: pipeline.run(spark, config, args.source),
                   ["--source", "x", "--set", "lake.root=x"], needs_spark=False)
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"prizeflow run: error: {line}"
