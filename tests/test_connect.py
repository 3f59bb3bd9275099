"""The jobs over Spark Connect: a real Spark Connect server (spark-submit of
``org.apache.spark.sql.connect.service.SparkConnectServer`` from the pip package, Delta on its
classpath and as its SQL extension, local[2]) and the unchanged `prizeflow` commands pointed at it
with ``spark.remote``. The same corpus and config run classic (local[2] in the command's own JVM)
must give the same ratings, the same split and the same test RMSE."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from processes import (BIN, free_port, generate_corpus, pipeline_env, start_daemon,
                       stop_daemon, wait_until)

pytestmark = [pytest.mark.deploy, pytest.mark.spark(process=True)]  # a Spark Connect server

SMALL_GRID = ["--set", "train.grid.rank=[4,8]", "--set", "train.grid.reg_param=[0.1]",
              "--set", "train.grid.max_iter=[6]", "--set", "spark.master=local[2]",
              "--set", "spark.conf.spark.sql.shuffle.partitions=4"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


TOKEN = "not-a-real-token-42"


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """``sc://`` URL of a running Spark Connect server with Delta, which takes clients that
    bring its token (a bearer token, over the loopback channel pyspark uses for localhost)."""
    from prizeflow.spark import DELTA_CATALOG, DELTA_EXTENSION, delta_package
    import pyspark

    base = tmp_path_factory.mktemp("connect-server")
    port = free_port()
    log = base / "server.log"
    server = start_daemon(
        [BIN / "spark-submit", "--master", "local[2]",
         "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
         "--packages", delta_package(pyspark.__version__),
         "--driver-memory", "2g",
         "--conf", f"spark.sql.extensions={DELTA_EXTENSION}",
         "--conf", f"spark.sql.catalog.spark_catalog={DELTA_CATALOG}",
         "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", "spark.ui.enabled=false",
         "--conf", f"spark.checkpoint.dir={base / 'checkpoints'}",
         "spark-internal"],
        log, pipeline_env(SPARK_LOCAL_IP="127.0.0.1", SPARK_CONNECT_AUTHENTICATE_TOKEN=TOKEN))
    try:
        wait_until(lambda: _listening(port), "Spark Connect server", [server], [log], timeout=300)
        yield f"sc://localhost:{port}", log
    finally:
        stop_daemon(server)


def _prizeflow(command: str, args: list, cwd: Path, env: dict[str, str]) -> tuple[dict, str]:
    result = subprocess.run([str(BIN / "prizeflow"), command, *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _pipeline(corpus: Path, base: Path, extra: list[str], env: dict[str, str]):
    base.mkdir()
    tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
    paths = ["--set", f"lake.root={base / 'lake'}", "--set", f"mlflow.tracking_uri={tracking_uri}",
             *SMALL_GRID, *extra]
    summaries, logs = {}, []
    for command, args in (("ingest", ["--source", corpus]), ("train", []), ("register", []),
                          ("recommend", ["--top", "5"])):
        summaries[command], log = _prizeflow(command, [*args, *paths], base, env)
        logs.append(log + json.dumps(summaries[command]))
    return {**summaries, "logs": "\n".join(logs), "tracking_uri": tracking_uri, "base": base}


@pytest.mark.mlflow
def test_the_jobs_over_spark_connect_match_classic_spark(connect_server, tmp_path):
    url, server_log = connect_server
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, 30000, 600, 150, 11)
    # The token must never reach a log or the tracking store.
    remote = f"{url}/;token={TOKEN}"
    env = {k: v for k, v in pipeline_env().items() if k != "SPARK_REMOTE"}
    over_connect = _pipeline(corpus, tmp_path / "connect", ["--set", f"spark.remote={remote}"],
                             env)
    classic = _pipeline(corpus, tmp_path / "classic", [], env)
    assert "SparkSession up: master local[2]" in classic["logs"]

    logs = over_connect["logs"]
    assert f"SparkSession up: Spark Connect at {url}/;token=***" in logs
    assert TOKEN not in logs  # every command's stderr and summary
    # ... nor anywhere in the tracking store or the run's artifacts (the config among them).
    assert TOKEN.encode() not in (tmp_path / "connect" / "mlflow.db").read_bytes()
    for artifact in (tmp_path / "connect").rglob("*"):
        if artifact.is_file() and artifact.suffix in {".yaml", ".json", ".txt", ".yml"}:
            assert TOKEN not in artifact.read_text(errors="replace"), artifact
    assert "ALS checkpoints go to the server's spark.checkpoint.dir" in logs
    assert "Spark ML form of the model is not logged" in logs
    # The work ran in the server: its log shows the Delta commits, the client started no JVM.
    server_text = server_log.read_text(errors="replace")
    assert str(tmp_path / "connect" / "lake" / "ratings") in server_text
    assert "SparkSession up: master" not in logs

    for name in ("ratings", "movies", "probe", "qualifying", "quarantined", "lines_read"):
        assert over_connect["ingest"][name] == classic["ingest"][name], name
    assert over_connect["ingest"]["ratings"] == 30000
    connect_train, classic_train = over_connect["train"], classic["train"]
    assert connect_train["split_method"] == classic_train["split_method"]
    assert connect_train["split_counts"] == classic_train["split_counts"]
    assert connect_train["best_params"] == classic_train["best_params"]
    for key in ("test_rmse", "test_rmse_als", "validation_rmse"):
        assert connect_train[key] == pytest.approx(classic_train[key], abs=1e-6), key
    assert connect_train["test_rmse"] < connect_train["baselines"]["bias"]

    registered = over_connect["register"]
    assert registered["alias"] == "champion" and registered["version"] == 1
    assert registered["test_rmse"] == pytest.approx(classic["register"]["test_rmse"], abs=1e-6)
    client = MlflowClient(tracking_uri=over_connect["tracking_uri"])
    run = client.get_run(connect_train["run_id"])
    assert not any(TOKEN in str(v) for v in run.data.params.values())
    assert not any(TOKEN in str(v) for v in run.data.tags.values())

    assert over_connect["recommend"]["users"] == classic["recommend"]["users"] == 600
    assert over_connect["recommend"]["rows"] == classic["recommend"]["rows"]


def test_a_wrong_token_or_no_server_fails_in_one_line(connect_server, tmp_path):
    url, _ = connect_server
    env = pipeline_env()
    wrong = subprocess.run([str(BIN / "prizeflow"), "train", "--set", f"lake.root={tmp_path}",
                            "--set", f"spark.remote={url}/;token=wrong-token"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert wrong.returncode == 1
    last = wrong.stderr.strip().splitlines()[-1]
    assert last.startswith("prizeflow train: error: ") and "wrong-token" not in wrong.stderr
    port = free_port()
    nothing = subprocess.run([str(BIN / "prizeflow"), "train", "--set", f"lake.root={tmp_path}",
                              "--set", f"spark.remote=sc://127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines()[-1] == (
        f"prizeflow train: error: cannot reach the Spark Connect server at sc://127.0.0.1:{port}: "
        "Connection refused")
