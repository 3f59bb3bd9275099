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

from prizeflow import tracking

from test_factors import _model, _neighbour_table

pytestmark = pytest.mark.integration  # MLflow logging: seconds, not milliseconds

LOAD_AND_PREDICT = """
import json, sys
import mlflow.pyfunc, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
frame = pd.DataFrame(json.loads(sys.argv[3]))
print(json.dumps(model.predict(frame).tolist()))
"""


def test_logged_from_code_and_loaded_without_pickle(tmp_path):
    rng = np.random.default_rng(4)
    model = _model(rng, _neighbour_table(rng)[1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("served", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = tracking.log_factor_model(model)
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
