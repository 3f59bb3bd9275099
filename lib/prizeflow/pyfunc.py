"""The MLflow pyfunc flavour of a trained model: Spark-free, loads and predicts with numpy.

Input: a DataFrame with ``user_id`` and ``movie_id`` (int32 or int64) and, optionally, each row's
user history as two list columns ``history_movie_ids`` and ``history_ratings`` (the user's
ratings; a NaN rating is a movie the user rated without the rating being known, such as a
``qualifying`` pair: it counts in the implicit term's N(u) only, as in batch scoring). With
the history the neighbourhood blend predicts what ``train`` scored (``test_rmse``); without it
the model uses the weights learned for that case (``test_rmse_without_history``).
For a model with time effects, an optional ``rated_on`` column (dates) gives each row's day and
an optional list column ``history_rated_on`` each history rating's; a row or rating without a
date is taken at the model's latest day. Other models ignore both.
A blend of registered models (:mod:`prizeflow.model_blend`) takes the same input: each member
predicts it, and the blend's weights (with or without a history, as the input brings one or
not) combine them. Output: one predicted rating per row, in input order. Imports nothing from Spark, so
``mlflow.pyfunc.load_model("models:/prizeflow-als@champion")`` works in a process without a JVM.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from prizeflow.columns import MOVIE_ID, PREDICTION, RATED_ON, USER_ID
from prizeflow.factors import FactorModel, Requests
from prizeflow.model_blend import BlendedModel

ARTIFACT_KEY = "factors"
BLEND_ARTIFACT_KEY = "blend"
HISTORY_MOVIES, HISTORY_RATINGS = "history_movie_ids", "history_ratings"
HISTORY_DATES = "history_rated_on"
EPOCH = np.datetime64("1970-01-01", "D")


# MLflow's schema enforcement turns every date in a declared list of datetimes into an int:
# nanoseconds since 1970-01-01. Smaller numbers (before 1973-03-04) would be day, second or
# microsecond counts read wrongly, and are refused.
SMALLEST_NANOSECONDS = 10**17


def _days(values) -> np.ndarray:
    """Days since 1970-01-01 of dates (date objects, datetimes, ISO 8601 strings, or ints of
    nanoseconds since 1970 as MLflow passes a list of datetimes on), in UTC for a zoned time;
    NaN for none. Other numbers are refused: day numbers would be read as nanoseconds."""
    series = pd.Series(values, dtype=object)
    present = series[series.notna()]
    numbers = [v for v in present if isinstance(v, (int, float, np.number))
               and not isinstance(v, bool)]
    if numbers and (len(numbers) < len(present) or
                    not all(float(v).is_integer() and v >= SMALLEST_NANOSECONDS
                            for v in numbers)):
        raise ValueError("dates must be dates, datetimes or ISO 8601 strings, not numbers "
                         "(other than nanoseconds since 1970, as MLflow passes them on)")
    if numbers:
        series = pd.Series([None if pd.isna(v) else pd.Timestamp(int(v), unit="ns")
                            for v in series], dtype=object)
    stamps = pd.to_datetime(series, errors="raise", utc=True, format="ISO8601")
    days = (stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[D]") - EPOCH).astype(np.float64)
    days[stamps.isna().to_numpy()] = np.nan
    return days


def _ids(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy()
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError("user_id and movie_id must be integers")
    return values.astype(np.int64)


def _entries(value) -> list:
    return [] if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else list(value)


def _histories(frame: pd.DataFrame):
    """(row, movie, rating, day or None) of every history entry; a missing list is an empty
    history, a missing ``history_rated_on`` list leaves those ratings at the latest day."""
    owners, movies, ratings, dates = [], [], [], []
    with_dates = HISTORY_DATES in frame.columns
    date_lists = frame[HISTORY_DATES] if with_dates else [None] * len(frame)
    for row, (ids, values, when) in enumerate(zip(frame[HISTORY_MOVIES], frame[HISTORY_RATINGS],
                                                  date_lists)):
        ids, values, when = _entries(ids), _entries(values), _entries(when)
        if len(ids) != len(values):
            raise ValueError(f"row {row}: {HISTORY_MOVIES} has {len(ids)} entries but "
                             f"{HISTORY_RATINGS} has {len(values)}")
        if with_dates and when and len(when) != len(ids):
            raise ValueError(f"row {row}: {HISTORY_DATES} has {len(when)} entries but "
                             f"{HISTORY_MOVIES} has {len(ids)}")
        owners.append(np.full(len(ids), row, dtype=np.int64))
        movies.append(np.asarray(ids, dtype=np.int64))
        ratings.append(np.asarray(values, dtype=np.float64))
        dates += when if when else [None] * len(ids)
    if not owners:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), None
    days = _days(dates) if with_dates else None
    return np.concatenate(owners), np.concatenate(movies), np.concatenate(ratings), days


def predict_frame(model: FactorModel, frame: pd.DataFrame) -> np.ndarray:
    missing = {USER_ID, MOVIE_ID} - set(frame.columns)
    if missing:
        raise ValueError(f"input needs columns user_id and movie_id; missing {sorted(missing)}")
    users, movies = _ids(frame, USER_ID), _ids(frame, MOVIE_ID)
    given = [c for c in (HISTORY_MOVIES, HISTORY_RATINGS) if c in frame.columns]
    if len(given) == 1:
        raise ValueError(f"give both {HISTORY_MOVIES} and {HISTORY_RATINGS}, or neither; "
                         f"got only {given[0]}")
    days = _days(frame[RATED_ON]) if RATED_ON in frame.columns else None
    if not given:
        return model.predict(users, movies, days=days)
    owner, h_movies, h_ratings, h_days = _histories(frame)
    # Each row is scored with the history it brings (rows of one user may repeat it).
    requests = Requests(users, np.arange(len(users)), movies, owner, h_movies, h_ratings,
                        days=days, history_days=h_days)
    return model.clip(model.combine(model.parts(requests)))


class FactorPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = FactorModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series(predict_frame(self.model, model_input), index=model_input.index,
                         name=PREDICTION)


def predict_blend_frame(model: BlendedModel, frame: pd.DataFrame) -> np.ndarray:
    """Each member's prediction of ``frame`` (:func:`predict_frame`), blended."""
    with_history = HISTORY_MOVIES in frame.columns and HISTORY_RATINGS in frame.columns
    return model.combine([predict_frame(member, frame) for member in model.members],
                         with_history)


class BlendPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = BlendedModel.load(context.artifacts[BLEND_ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series(predict_blend_frame(self.model, model_input), index=model_input.index,
                         name=PREDICTION)
