"""The MLflow pyfunc flavour of a trained model: Spark-free, loads and predicts with numpy.

Input: a DataFrame with ``user_id`` and ``movie_id`` columns (int32 or int64); output: one
predicted rating per row, in input order. Imports nothing from Spark, so
``mlflow.pyfunc.load_model("models:/prizeflow-als@champion")`` works in a process without a JVM.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from prizeflow.factors import FactorModel

ARTIFACT_KEY = "factors"


class FactorPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = FactorModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        missing = {"user_id", "movie_id"} - set(model_input.columns)
        if missing:
            raise ValueError(f"input needs columns user_id and movie_id; missing {sorted(missing)}")
        users = model_input["user_id"].to_numpy()
        movies = model_input["movie_id"].to_numpy()
        if not (np.issubdtype(users.dtype, np.integer) and np.issubdtype(movies.dtype, np.integer)):
            raise ValueError("user_id and movie_id must be integers")
        return pd.Series(self.model.predict(users, movies), index=model_input.index,
                         name="prediction")
