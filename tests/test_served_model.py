"""The registered pyfunc is logged from code: no pickle in the model, and a process that
refuses pickle deserialisation still loads it and predicts what the arrays predict."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from prizeflow import model_integrity, tracking

from test_factors import _model, _neighbour_table

pytestmark = pytest.mark.mlflow

LOAD_AND_PREDICT = """
import json, sys
import mlflow.pyfunc, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
frame = pd.DataFrame(json.loads(sys.argv[3]))
print(json.dumps(model.predict(frame).tolist()))
"""


def _logged_model(tmp_path, seed: int):
    """(a FactorModel with neighbours, its store's URI, the logged model's info)."""
    rng = np.random.default_rng(seed)
    model = _model(rng, _neighbour_table(rng)[1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("served", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = tracking.log_factor_model(model)
    return model, uri, info


def test_logged_from_code_and_loaded_without_pickle(tmp_path):
    model, uri, info = _logged_model(tmp_path, 4)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "m")))
    assert not list(local.rglob("*.pkl")), "a pickle was logged"
    mlmodel = (local / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "served_model.py" in mlmodel

    pairs = {"user_id": [int(u) for u in model.user_ids[:5]] + [10**9],
             "movie_id": [int(m) for m in model.movie_ids[:5]] + [int(model.movie_ids[0])]}
    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, uri, info.model_uri,
                          json.dumps(pairs)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    served = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    expected = model.predict(np.array(pairs["user_id"]), np.array(pairs["movie_id"]))
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-12)
    assert pd.Series(served).between(model.low, model.high).all()


def test_make_serve_answers_invocations_with_the_champions_predictions(tmp_path):
    """`make serve` as the README gives it, from a shell whose PATH lacks the venv: it serves a
    verified copy of the champion."""
    import os
    import urllib.request

    from processes import answers, free_port, start_daemon, stop_daemon, wait_until

    model, uri, info = _logged_model(tmp_path, 5)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("prizeflow-als")
    # As `register` records it: `make serve` serves only a version whose files match it.
    digest = model_integrity.digest_of(info.model_uri)
    version = client.create_model_version("prizeflow-als", info.model_uri, info.run_id,
                                          tags={model_integrity.DIGEST_TAG: digest})
    client.set_registered_model_alias("prizeflow-als", "champion", version.version)

    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    log = tmp_path / "serve.log"
    server = start_daemon(["make", "-s", "-C", Path(__file__).resolve().parents[1], "serve",
                           f"TRACKING_URI={uri}", f"SERVE_PORT={port}"], log, env)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until(lambda: answers(f"{base}/ping"), "mlflow models serve", [server], [log],
                   timeout=240)
        pairs = {"user_id": [int(u) for u in model.user_ids[:4]] + [10**9],
                 "movie_id": [int(m) for m in model.movie_ids[:4]] + [int(model.movie_ids[1])]}
        body = json.dumps({"dataframe_split": {"columns": ["user_id", "movie_id"],
                                               "data": list(map(list, zip(*pairs.values())))}})
        request = urllib.request.Request(f"{base}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            records = json.loads(answer.read())["predictions"]
        # The pyfunc returns a Series named "prediction": one record per row.
        assert [set(r) for r in records] == [{"prediction"}] * len(pairs["user_id"])
        served = np.array([r["prediction"] for r in records], dtype=np.float64)
        expected = model.predict(np.array(pairs["user_id"]), np.array(pairs["movie_id"]))
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
        bad = urllib.request.Request(
            f"{base}/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"dataframe_split": {"columns": ["user_id", "movie_id"],
                                                 "data": [["six", 1]]}}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=60)
        assert refused.value.code == 400
    finally:
        stop_daemon(server)
