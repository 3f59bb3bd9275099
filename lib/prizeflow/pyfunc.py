"""The MLflow pyfunc flavour of a trained model: Spark-free, loads and predicts with numpy.

Input: a DataFrame with ``user_id`` and ``movie_id`` (int32 or int64) and, optionally, each row's
user history as two list columns ``history_movie_ids`` and ``history_ratings`` (the user's
ratings). With the history the neighbourhood blend predicts what ``train`` scored (``test_rmse``);
without it the model uses the weights learned for that case (``test_rmse_without_history``).
Output: one predicted rating per row, in input order. Imports nothing from Spark, so
``mlflow.pyfunc.load_model("models:/prizeflow-als@champion")`` works in a process without a JVM.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from prizeflow.columns import MOVIE_ID, PREDICTION, USER_ID
from prizeflow.factors import FactorModel, Requests

ARTIFACT_KEY = "factors"
HISTORY_MOVIES, HISTORY_RATINGS = "history_movie_ids", "history_ratings"


def _ids(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy()
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError("user_id and movie_id must be integers")
    return values.astype(np.int64)


def _histories(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, movie, rating) of every history entry; a missing list is an empty history."""
    owners, movies, ratings = [], [], []
    for row, (ids, values) in enumerate(zip(frame[HISTORY_MOVIES], frame[HISTORY_RATINGS])):
        ids = [] if ids is None or (np.isscalar(ids) and pd.isna(ids)) else list(ids)
        values = [] if values is None or (np.isscalar(values) and pd.isna(values)) else list(values)
        if len(ids) != len(values):
            raise ValueError(f"row {row}: {HISTORY_MOVIES} has {len(ids)} entries but "
                             f"{HISTORY_RATINGS} has {len(values)}")
        owners.append(np.full(len(ids), row, dtype=np.int64))
        movies.append(np.asarray(ids, dtype=np.int64))
        ratings.append(np.asarray(values, dtype=np.float64))
    if not owners:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(owners), np.concatenate(movies), np.concatenate(ratings)


def predict_frame(model: FactorModel, frame: pd.DataFrame) -> np.ndarray:
    missing = {USER_ID, MOVIE_ID} - set(frame.columns)
    if missing:
        raise ValueError(f"input needs columns user_id and movie_id; missing {sorted(missing)}")
    users, movies = _ids(frame, USER_ID), _ids(frame, MOVIE_ID)
    given = [c for c in (HISTORY_MOVIES, HISTORY_RATINGS) if c in frame.columns]
    if len(given) == 1:
        raise ValueError(f"give both {HISTORY_MOVIES} and {HISTORY_RATINGS}, or neither; "
                         f"got only {given[0]}")
    if not given:
        return model.predict(users, movies)
    owner, h_movies, h_ratings = _histories(frame)
    # Each row is scored with the history it brings (rows of one user may repeat it).
    requests = Requests(users, np.arange(len(users)), movies, owner, h_movies, h_ratings)
    return model.clip(model.combine(model.parts(requests)))


class FactorPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = FactorModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series(predict_frame(self.model, model_input), index=model_input.index,
                         name=PREDICTION)
