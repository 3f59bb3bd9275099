"""train and register against a real `mlflow server` over HTTP (SQLite backend, proxied
artifacts), then load the champion back through the server."""

import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from prizeflow import registry, training

from conftest import copy_lake
from processes import answers, free_port, start_daemon, stop_daemon, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "server.log"
    server = start_daemon(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", port, "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", tmp_path / "server-artifacts"], log, env)
    url = f"http://127.0.0.1:{port}"

    try:
        wait_until(lambda: answers(f"{url}/health"), "mlflow server", [server], [log])
        yield url, tmp_path
    finally:
        stop_daemon(server)


def test_train_and_register_over_http(spark, small_lake, tmp_path, mlflow_server, monkeypatch):
    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    config = copy_lake(small_lake, tmp_path / "client")
    config = config.override(
        f"mlflow.tracking_uri={url}", "train.grid.rank=[4]", "train.grid.reg_param=[0.1]",
        "train.grid.max_iter=[4]", "train.grid.bias_reg=[5.0]", "train.num_blocks=2",
        "train.log_spark_model=false",
        "train.neighbours.enabled=false")  # the blend is tested in test_train
    trained = training.train(spark, config).summary()
    registered = registry.register(config, None, spark)
    assert registered["alias"] == "champion" and registered["version"] == 1
    assert registered["train_run_id"] == trained["run_id"]

    # Artifacts went through the server's proxy into its destination folder, not the client's.
    stored = list((server_dir / "server-artifacts").rglob("factors.npz"))
    assert stored, "the model's arrays are not in the server's artifact store"

    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"models:/{config.mlflow.registered_model}@champion")
    factors = model.unwrap_python_model().model
    pairs = pd.DataFrame({"user_id": factors.user_ids[:5], "movie_id": factors.movie_ids[:5]})
    served = np.asarray(model.predict(pairs))
    assert np.allclose(served, factors.predict(pairs["user_id"], pairs["movie_id"]))
    run = mlflow.MlflowClient().get_run(trained["run_id"])
    assert run.data.metrics["test_rmse"] == pytest.approx(trained["test_rmse"])
