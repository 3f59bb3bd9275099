"""dags/prizeflow_dag.py in a real Airflow 3 (its own venv, `make airflow`): the DAG imports with no
errors, and `airflow dags test` runs ingest -> train -> register -> recommend through
SparkSubmitOperator against a local master, with a temporary AIRFLOW_HOME."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from prizeflow.generate import generate_corpus, make_spec
from processes import pipeline_env

pytestmark = pytest.mark.deploy

PROJECT = Path(__file__).resolve().parents[1]
AIRFLOW_BIN = PROJECT / ".venv-airflow" / "bin"

DAGBAG_REPORT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={folder!r})
dag = bag.dags.get("prizeflow")
report = {{"dags": sorted(bag.dags), "import_errors": bag.import_errors}}
if dag is not None:
    report.update(
        catchup=dag.catchup, max_active_runs=dag.max_active_runs, params=dict(dag.params),
        tasks={{t.task_id: {{"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                            "backoff": t.retry_exponential_backoff, "doc": bool(t.doc_md),
                            "application": t.application, "packages": t.packages}}
               for t in dag.tasks}})
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Run an Airflow CLI command or Python snippet in the Airflow venv with a migrated home."""
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail("Airflow's venv is missing: run `make airflow` (make test-deploy does)")
    home = tmp_path_factory.mktemp("airflow-home")
    env = pipeline_env(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
        AIRFLOW_CONN_PRIZEFLOW_SPARK=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # A test deployment: its runs write to their own temporary lake and store.
        PRIZEFLOW_DAG_ALLOWED_OVERRIDES="lake.root,mlflow.tracking_uri")
    env.pop("MLFLOW_TRACKING_URI", None)

    def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], cwd=home, env=env, capture_output=True,
                              text=True, timeout=timeout)

    migrated = run([AIRFLOW_BIN / "airflow", "db", "migrate"])
    assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
    return run


def test_dag_imports_cleanly_with_the_expected_shape(airflow):
    result = airflow([AIRFLOW_BIN / "python", "-c",
                      DAGBAG_REPORT.format(folder=str(PROJECT / "dags"))])
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report["import_errors"] == {} and report["dags"] == ["prizeflow"]
    assert report["catchup"] is False and report["max_active_runs"] == 1
    assert set(report["params"]) == {"conf", "source", "overrides", "top"}
    from prizeflow.spark import delta_package
    import pyspark

    tasks = report["tasks"]
    assert {name: t["upstream"] for name, t in tasks.items()} == {
        "ingest": [], "train": ["ingest"], "register": ["train"], "recommend": ["register"]}
    for name, task in tasks.items():
        assert task["retries"] == 2 and task["backoff"] and task["doc"]
        assert task["application"] == str(PROJECT / "jobs" / f"{name}.py")
        assert task["packages"] == delta_package(pyspark.__version__)


@pytest.mark.spark(process=True)  # spark-submit in each task; the test reads the lake
@pytest.mark.mlflow
@pytest.mark.timeout(1800)
def test_airflow_dags_test_runs_the_whole_pipeline(airflow, spark, tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(make_spec(corpus, ratings=20000, users=500, movies=120, seed=33))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_conf = {
        "conf": str(PROJECT / "conf" / "local.yaml"), "source": str(corpus), "top": 3,
        "overrides": [f"lake.root={tmp_path / 'lake'}", f"mlflow.tracking_uri={tracking_uri}",
                      "spark.conf.spark.sql.shuffle.partitions=2", "train.grid.rank=[4]",
                      "train.grid.reg_param=[0.1]", "train.grid.max_iter=[5]",
                      "train.num_blocks=2", "train.log_spark_model=false"]}
    result = airflow([AIRFLOW_BIN / "airflow", "dags", "test", "prizeflow", "-c",
                      json.dumps(run_conf)], timeout=1700)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    # A first attempt that failed would pass after a retry (2 minutes later, then 4): no task
    # may need one.
    retried = [line for line in output.splitlines() if "up_for_retry" in line.lower()]
    assert not retried, "\n".join(retried[:5]) + "\n" + output[-5000:]
    # Each job's last stdout line (its JSON summary) is streamed into the task log.
    summaries = {}
    for match in re.finditer(r'(\{"command": "(\w+)".*\})', output):
        summaries[match.group(2)] = json.loads(match.group(1))
    assert set(summaries) == {"ingest", "train", "register", "recommend"}, output[-5000:]
    assert summaries["ingest"]["ratings"] == 20000 and summaries["ingest"]["quarantined"] == 0
    assert summaries["train"]["grid_points"] == 1
    assert summaries["register"]["version"] == 1 and summaries["register"]["alias"] == "champion"
    assert "--master local[2]" in output  # the connection's master reached spark-submit

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias("prizeflow-als", "champion")
    assert champion.run_id == summaries["train"]["run_id"]
    # register took the run its own DAG run's train task tagged, not just the latest one.
    pipeline_run = client.get_run(summaries["train"]["run_id"]).data.tags["prizeflow.pipeline_run"]
    assert pipeline_run and f"--pipeline-run {pipeline_run}" in output
    recommendations = spark.read.format("delta").load(str(tmp_path / "lake" / "recommendations"))
    users = recommendations.select("user_id").distinct().count()
    assert recommendations.count() == users * 3 == summaries["recommend"]["rows"]
