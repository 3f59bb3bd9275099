"""train and register against a real `mlflow server` over HTTP (SQLite backend, proxied
artifacts), then load the champion back through the server."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from prizeflow.jobs import register as register_job
from prizeflow.jobs import train as train_job

from conftest import copy_lake

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield url, tmp_path
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    log.close()


def test_train_and_register_over_http(spark, small_lake, tmp_path, mlflow_server, monkeypatch):
    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    config = copy_lake(small_lake, tmp_path / "client")
    config["mlflow"]["tracking_uri"] = url
    config["train"]["grid"] = {"kind": ["residual"], "rank": [4], "reg_param": [0.1],
                               "max_iter": [4], "bias_reg": [5.0]}
    config["train"]["num_blocks"] = 2
    config["train"]["log_spark_model"] = False
    trained = train_job.run(spark, config, argparse.Namespace())
    registered = register_job.run(spark, config, argparse.Namespace(run_id=None))
    assert registered["alias"] == "champion" and registered["version"] == 1
    assert registered["train_run_id"] == trained["run_id"]

    # Artifacts went through the server's proxy into its destination folder, not the client's.
    stored = list((server_dir / "server-artifacts").rglob("factors.npz"))
    assert stored, "the model's arrays are not in the server's artifact store"

    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"models:/{config['mlflow']['registered_model']}@champion")
    factors = model.unwrap_python_model().model
    pairs = pd.DataFrame({"user_id": factors.user_ids[:5], "movie_id": factors.movie_ids[:5]})
    served = np.asarray(model.predict(pairs))
    assert np.allclose(served, factors.predict(pairs["user_id"], pairs["movie_id"]))
    run = mlflow.MlflowClient().get_run(trained["run_id"])
    assert run.data.metrics["test_rmse"] == pytest.approx(trained["test_rmse"])
