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


@pytest.fixture
def mlflow_server(tmp_path, uses_mlflow):
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


@pytest.mark.spark
@pytest.mark.mlflow
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
    registered = registry.register(spark, config)
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


def test_a_server_that_answers_health_but_hangs_fails_each_call_in_bounded_time(tmp_path):
    """A tracking server that accepts connections and answers /health, then never answers an
    API call: every MLflow call waits mlflow.timeout_seconds per try, not MLflow's 120 s."""
    import http.server
    import subprocess
    import threading
    import time

    from processes import BIN, pipeline_env

    release = threading.Event()

    class Hanging(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                release.wait(120)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        result = subprocess.run(
            [str(BIN / "prizeflow"), "register", "--set", f"mlflow.tracking_uri={url}",
             "--set", "mlflow.timeout_seconds=1", "--set", f"lake.root={tmp_path / 'lake'}"],
            capture_output=True, text=True, timeout=120, env=pipeline_env(), cwd=tmp_path)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        server.shutdown()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prizeflow register: error: ") and url in last, last
    assert "timed out" in last.lower()
    # 4 tries of 1 s and 1 + 2 + 4 s of back-off, plus the process's own start.
    assert elapsed < 40, elapsed
