"""spark-submit on a real Spark standalone cluster: a master and two workers on 127.0.0.1 started
from the pip package with spark-class, then ingest -> train -> register submitted in client
deploy mode with the `make dist` archive as --py-files and conf/standalone.yaml unchanged
(only paths are overridden). The daemons are stopped by process group at the end."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from processes import (BIN, free_port, generate_corpus, pipeline_env, start_daemon,
                       stop_daemon, wait_until)

# A Spark master and workers, drivers started by spark-submit; train and register into MLflow.
pytestmark = [pytest.mark.deploy, pytest.mark.spark(process=True), pytest.mark.mlflow]

PROJECT = Path(__file__).resolve().parents[1]


def _master_state(webui: str) -> dict:
    try:
        with urllib.request.urlopen(f"{webui}/json/", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, master web UI URL, worker work dirs) of a running 2-worker cluster."""
    base = tmp_path_factory.mktemp("standalone")
    env = pipeline_env(SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1")
    port, webui_port = free_port(), free_port()
    master_url, webui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui_port}"
    logs = [base / "master.log"]
    daemons = [start_daemon([BIN / "spark-class", "org.apache.spark.deploy.master.Master",
                             "--host", "127.0.0.1", "--port", port, "--webui-port", webui_port],
                            logs[0], env)]
    work_dirs = []
    try:
        for number in (1, 2):
            work_dir = base / f"worker{number}"
            work_dir.mkdir()
            work_dirs.append(work_dir)
            logs.append(base / f"worker{number}.log")
            daemons.append(start_daemon(
                [BIN / "spark-class", "org.apache.spark.deploy.worker.Worker",
                 "--host", "127.0.0.1", "--cores", "1", "--memory", "2g",
                 "--webui-port", free_port(), "--work-dir", work_dir, master_url], logs[-1], env))
        wait_until(lambda: _master_state(webui).get("aliveworkers") == 2,
                   "standalone master with two workers", daemons, logs)
        yield master_url, webui, work_dirs
    finally:
        for daemon in reversed(daemons):
            stop_daemon(daemon)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(["make", "-s", "dist", f"DIST={out}"], cwd=PROJECT, env=pipeline_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _submit(cluster_url: str, dist: Path, job: str, args: list[str], cwd: Path):
    from prizeflow.spark import delta_package
    import pyspark

    command = [BIN / "spark-submit", "--master", cluster_url, "--deploy-mode", "client",
               "--packages", delta_package(pyspark.__version__),
               "--py-files", dist / "prizeflow-0.1.0.zip",
               "--driver-memory", "1g", "--executor-memory", "1g",
               "--conf", "spark.executor.cores=1", "--conf", "spark.cores.max=2",
               "--conf", "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1",
               dist / "jobs" / f"{job}.py", "--conf", dist / "conf" / "standalone.yaml", *args]
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                            timeout=900, env=pipeline_env(SPARK_LOCAL_IP="127.0.0.1"))
    # spark-submit merges the Python driver's stderr into its stdout.
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{job} failed:\n{result.stderr[-1500:]}\n{result.stdout[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), output


def test_ingest_train_register_on_a_standalone_cluster(cluster, dist, tmp_path):
    master_url, webui, work_dirs = cluster
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, 30000, 600, 150, 11)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    paths = ["--set", f"lake.root={tmp_path / 'lake'}",
             "--set", f"mlflow.tracking_uri={tracking_uri}",
             "--set", f"mlflow.dfs_tmpdir={tmp_path / 'mlflow-tmp'}",
             "--set", "spark.conf.spark.sql.shuffle.partitions=4"]

    ingested, log = _submit(master_url, dist, "ingest", ["--source", corpus, *paths], tmp_path)
    assert f"SparkSession up: master {master_url}" in log
    # The driver ran the code shipped with --py-files, not the checkout's editable install.
    assert f"from {dist / 'prizeflow-0.1.0.zip'}/prizeflow" in log
    assert ingested["ratings"] == 30000 and ingested["quarantined"] == 0

    grid = ["--set", "train.grid.rank=[4,8]", "--set", "train.grid.reg_param=[0.1]",
            "--set", "train.grid.max_iter=[6]", "--set", "train.num_blocks=2"]
    trained, _ = _submit(master_url, dist, "train", [*paths, *grid], tmp_path)
    assert trained["grid_points"] == 2 and trained["data_version"] == ingested["delta_versions"]["ratings"]
    assert trained["test_rmse"] < trained["baselines"]["bias"] < trained["baselines"]["global_mean"]

    registered, _ = _submit(master_url, dist, "register", paths, tmp_path)
    assert registered["version"] == 1 and registered["alias"] == "champion"
    assert registered["train_run_id"] == trained["run_id"]

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias("prizeflow-als", "champion")
    assert champion.run_id == trained["run_id"]
    assert float(champion.tags["test_rmse"]) == pytest.approx(trained["test_rmse"], abs=1e-6)
    run = client.get_run(trained["run_id"])
    assert run.data.params["best_rank"] in {"4", "8"}

    # ingest and train ran on the cluster with executors on both workers; register starts no
    # SparkContext unless a champion must be re-scored on a new test set.
    apps = _master_state(webui)["completedapps"]
    assert sorted(app["name"] for app in apps) == ["prizeflow", "prizeflow"]
    for work_dir in work_dirs:
        assert len([d for d in work_dir.iterdir() if d.name.startswith("app-")]) == 2, work_dir
