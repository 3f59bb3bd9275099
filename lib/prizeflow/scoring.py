"""Batch scoring in Spark with the model's own numpy rule, users grouped into buckets.

The prediction rule lives once, in :mod:`prizeflow.factors`; this module only moves data to it.
Users are hashed into buckets, one Spark task per bucket; a task receives, for its users,

- the pairs to score, each carrying the user's side of the model (bias and factors; with time
  effects also the user's mean rating day and drift, and the pair's day), and
- the user's rating history (user, movie, rating; with time effects its days), read from the
  lake by the caller and packed where it lies into a few rows of bytes per partition and bucket
  before it is shuffled,

and calls :meth:`FactorModel.parts` (or :meth:`FactorModel.top_n`). The movie side of the model
(biases, factors and stored neighbours: O(movies x neighbours)) travels with the task's code.
Nothing proportional to the number of ratings passes through the driver or a broadcast.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterator

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, DoubleType, FloatType

from prizeflow import metrics, partitions
from prizeflow.columns import DAY, MOVIE_ID, PREDICTION, RATED_ON, RATING, TAG, USER_ID
from prizeflow.factors import FactorModel, Requests
from prizeflow.model_blend import BlendedModel
from prizeflow.rule import HAS_FACTORS
from prizeflow.rule import PARTS as RULE_PARTS
from prizeflow.time_effects import USER_TIME, day_number

# History ratings per scoring task. At 100M a task's Python worker peaked at 1.8 GB with 4M and
# at 1.1 GB with 2M, with the same output and no loss of speed (BENCHMARKS.md, issue 30 item 4);
# 1M, because validation scoring runs beside the training JVM's full heap (BENCHMARKS.md).
ROWS_PER_BUCKET = 1_000_000
# History ratings per task in a batch process of its own (recommend, predict): no training JVM
# beside it, and every task loads the whole movie side of the model (80 MB pickled at 100M), so
# fewer, larger tasks (BENCHMARKS.md, issue 30, "Items 2, 3 and 4 again").
BATCH_ROWS_PER_BUCKET = 4_000_000
PACK_ROWS = 2_000_000  # history ratings a packing task holds at once (about 40 MB in Python)
BUCKET = "_pf_bucket"
# The packed history: (source column, packed column, bytes as numpy dtype), one row of each
# per partition and bucket.
PACKED_HISTORY = ((USER_ID, "history_users", "<i4"), (MOVIE_ID, "history_movies", "<i4"),
                  (RATING, "history_ratings", "<f4"))
PACKED = tuple(name for _, name, _ in PACKED_HISTORY)
# A model with time effects also needs each history rating's day (float32 holds every day
# number exactly).
PACKED_DAYS = (DAY, "history_days", "<f4")
# The user side every task receives: the bias, the time effects' mean day and drift (null
# without them) and the factors.
USER_SIDE = ("b_user", *USER_TIME, "factors")
VALIDATION_TAG, TEST_TAG = 1, 2  # the tags train scores its held-out parts under
# Every part a rule may read, in the rule's order; a model without a term scores it as 0.
PARTS = (*RULE_PARTS, HAS_FACTORS)
TOP_SCHEMA = f"{USER_ID} int, rank int, {MOVIE_ID} int, predicted_rating double"


def bucket_count(rows: int, parallelism: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """At least two tasks per core, at most about ``rows_per_bucket`` rows each."""
    return max(2 * parallelism, math.ceil(rows / rows_per_bucket))


def with_days(frame: DataFrame) -> DataFrame:
    """``frame`` with ``day`` as a float (days since 1970-01-01): its own ``day``, else from
    ``rated_on``, else null (the model's latest day)."""
    if DAY in frame.columns:
        day = F.col(DAY)
    elif RATED_ON in frame.columns:
        day = day_number(F.col(RATED_ON))
    else:
        day = F.lit(None)
    return frame.withColumn(DAY, day.cast("float"))


def _packed_factors(factors: DataFrame) -> DataFrame:
    """(user_id, factors) with each factor vector as float32 bytes. An array column that is null
    on most rows (the history rows beside the users) makes Spark's Arrow transfer to Python
    about ten times slower per row (measured: 97 s against 7 s for 10M rows); bytes cost
    nothing there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            vectors = batch.column(1)
            width = len(vectors[0]) if len(vectors) else 0
            flat = pc.list_flatten(vectors).to_numpy(zero_copy_only=False).astype("<f4")
            flat = flat.reshape(-1, width) if width else flat.reshape(len(vectors), 0)
            yield pa.RecordBatch.from_arrays(
                [batch.column(0), pa.array([row.tobytes() for row in flat], pa.binary())],
                names=[USER_ID, "factors"])

    return (factors.select(F.col("id").cast("int").alias(USER_ID),
                           F.col("features").cast(ArrayType(FloatType())))
            .mapInArrow(pack, f"{USER_ID} int, factors binary"))


def user_side(factors: DataFrame | None, biases: DataFrame | None) -> DataFrame:
    """(user_id, :data:`USER_SIDE`) from ALS's ``userFactors`` (id, features) and the bias
    table (user_id, b_user[, mean_day, alpha]); either may be missing for a user. ``factors``:
    float32 bytes."""
    frames = []
    if factors is not None:
        frames.append(_packed_factors(factors))
    if biases is not None:
        frames.append(biases.select(F.col(USER_ID).cast("int"),
                                    *(F.col(c).cast("double") for c in ("b_user", *USER_TIME)
                                      if c in biases.columns)))
    side = frames[0]
    for other in frames[1:]:
        side = side.join(other, USER_ID, "full_outer")
    for name in USER_SIDE:
        if name not in side.columns:
            kind = BinaryType() if name == "factors" else DoubleType()
            side = side.withColumn(name, F.lit(None).cast(kind))
    return side.select(USER_ID, *USER_SIDE)


def _members(model: FactorModel | BlendedModel) -> list[tuple[FactorModel, str]]:
    """(model, the suffix of its user-side columns): the model itself, or each member of a
    blend (``_0``, ``_1``, ...), whose user sides travel side by side in one row per user."""
    if isinstance(model, BlendedModel):
        return [(member, f"_{index}") for index, member in enumerate(model.members)]
    return [(model, "")]


def _timed(model: FactorModel | BlendedModel) -> bool:
    return any(member.time is not None for member, _ in _members(model))


def _side_columns(model: FactorModel | BlendedModel) -> list[str]:
    """The user-side columns a task reads for ``model`` (:data:`USER_SIDE`, the time effects'
    only for a model that has them)."""
    return [f"{name}{suffix}" for member, suffix in _members(model)
            for name in ("b_user", "factors", *(USER_TIME if member.time is not None else ()))]


def user_frame(spark, model: FactorModel | BlendedModel) -> DataFrame:
    """The user side of a loaded model as a Spark frame (user_id, :data:`USER_SIDE`): what
    :func:`score` and :func:`top_n` take when the model comes from the registry. For a blend
    of models each member's columns carry its suffix (:func:`_members`), a user a member does
    not know having nulls there."""
    import pandas as pd

    if isinstance(model, BlendedModel):
        joined = None
        for member, suffix in _members(model):
            side = user_frame(spark, member).select(
                USER_ID, *(F.col(name).alias(f"{name}{suffix}") for name in USER_SIDE))
            joined = side if joined is None else joined.join(side, USER_ID, "full_outer")
        return joined

    has = model.user_has_factors
    user_time = (model.user_time if model.user_time is not None
                 else np.full((len(model.user_ids), 2), np.nan))
    frame = pd.DataFrame({
        USER_ID: model.user_ids.astype("int32"),
        "b_user": model.user_bias.astype("float64"),
        **{name: user_time[:, k] for k, name in enumerate(USER_TIME)},
        "factors": [row.tobytes() if keep else None for row, keep in
                    zip(model.user_factors.astype("<f4"), has)]})
    return spark.createDataFrame(frame, f"{USER_ID} int, b_user double, mean_day double, "
                                        "alpha double, factors binary")


def _packed_history(timed: bool):
    return PACKED_HISTORY + ((PACKED_DAYS,) if timed else ())


def _bucketed(wanted: DataFrame, history: DataFrame, buckets: int, timed: bool,
              side: list[str] | None = None) -> DataFrame:
    """The rows to score and the packed history (:data:`PACKED_HISTORY`, and the days for a
    model with time effects) of the same users, each in its user bucket's task; ``side``: the
    user-side columns the rows carry (default: one model's). The history is packed where it
    lies, before the shuffle: a few large rows per partition instead of one per rating (97M at
    full scale)."""
    bucket = F.pmod(F.xxhash64(F.lit(3), F.col(USER_ID)), F.lit(buckets)).cast("int")
    if side is None:
        side = ["b_user", "factors", *(USER_TIME if timed else ())]
    rows = with_days(wanted).select(USER_ID, MOVIE_ID, F.col(RATING).cast("float"), TAG, DAY,
                                    *side, bucket.alias(BUCKET))
    history_days = [DAY] if timed else []
    packed = partitions.pack(
        with_days(history).select(USER_ID, MOVIE_ID, F.col(RATING).cast("float"),
                                  *history_days, bucket.alias(BUCKET)),
        BUCKET, _packed_history(timed), PACK_ROWS)
    both = rows.unionByName(packed, allowMissingColumns=True)
    return partitions.by_task(both, F.col(BUCKET), buckets).drop(BUCKET)


def _local_model(movie_model: FactorModel, users: np.ndarray, b_user: np.ndarray,
                 factors, user_time: np.ndarray | None = None) -> FactorModel:
    """The movie side plus these users' side, from one task's rows (the first row of a user
    carries it; ``user_time``: each row's mean day and drift, for a model with time effects)."""
    ids, first = np.unique(users, return_index=True)
    bias = np.nan_to_num(np.asarray(b_user, dtype=np.float64)[first], nan=0.0)
    chosen = factors.take(first).to_pylist()
    has = np.array([blob is not None for blob in chosen], dtype=bool)
    rank = movie_model.rank
    matrix = np.zeros((len(ids), rank), dtype=np.float32)
    if has.any():
        matrix[has] = np.frombuffer(b"".join(b for b in chosen if b is not None),
                                    dtype="<f4").reshape(-1, rank)
    if user_time is not None:
        # A user the time effects never saw drifts by nothing.
        user_time = np.nan_to_num(user_time[first], nan=0.0)
    return movie_model.with_users(ids, bias, matrix, has, user_time)


def _requests(table, movie_model: FactorModel | BlendedModel):
    """(the rows to score, the task's model, its Requests) from one task's rows; for a blend,
    the task's model is the blend of its members' task models."""
    import pyarrow as pa

    timed = _timed(movie_model)
    is_packed = table.column(PACKED[0]).is_valid().to_numpy(zero_copy_only=False)
    asked = table.filter(pa.array(~is_packed))
    past = table.filter(pa.array(is_packed))
    asked_users = asked.column(USER_ID).to_numpy().astype(np.int64)

    def floats(name: str) -> np.ndarray:  # nulls as NaN
        return asked.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    local = []
    for member, suffix in _members(movie_model):
        user_time = (np.column_stack([floats(c + suffix) for c in USER_TIME])
                     if member.time is not None else None)
        local.append(_local_model(member, asked_users, floats("b_user" + suffix),
                                  asked.column("factors" + suffix).combine_chunks(), user_time))
    local = (movie_model.with_members(local) if isinstance(movie_model, BlendedModel)
             else local[0])
    history = tuple(partitions.binary_values(past.column(name), dtype)[0]
                    for _, name, dtype in _packed_history(timed))
    requests = Requests.by_user(asked_users, asked.column(MOVIE_ID).to_numpy(), history,
                                floats(DAY) if timed else None)
    return asked, local, requests


def score(model: FactorModel, users: DataFrame, wanted: DataFrame, history: DataFrame,
          buckets: int) -> DataFrame:
    """Score every row of ``wanted`` (user_id, movie_id, rating, tag > 0) in Spark tasks.

    ``users``: the user side (see :func:`user_side`); ``history``: (user_id, movie_id, rating),
    the ratings each user's neighbour and implicit terms draw on. For a model with time
    effects both ``wanted`` and ``history`` give each row's day as ``day`` or ``rated_on`` (a
    row without one is taken at the model's latest day). Returns the rows with the
    parts of :meth:`FactorModel.parts` (``has_factors`` as 1.0 / 0.0; ``neighbour_term`` and
    ``implicit_term`` 0 when the model has no such term), which :meth:`FactorModel.combine` or
    its Spark form turn into predictions; ``day`` is each row's day as scored (null: the
    model's latest)."""
    import pyarrow as pa

    names = PARTS
    movie_model = model.movie_side()
    timed = model.time is not None
    if model.neighbourhood is None:
        # Only the history terms read a history: without them, no rating leaves the lake.
        history = history.where(F.lit(False))
    wanted = (with_days(wanted).select(USER_ID, MOVIE_ID, RATING, TAG, DAY)
              .join(users, USER_ID, "left"))

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        asked, local, requests = _requests(table, movie_model)
        parts = local.parts(requests)
        for name in RULE_PARTS:
            parts.setdefault(name, np.zeros(len(requests.owner)))
        yield pa.RecordBatch.from_arrays(
            [asked.column(USER_ID).combine_chunks(), asked.column(MOVIE_ID).combine_chunks(),
             pa.array(asked.column(RATING).to_numpy().astype(np.float64)),
             asked.column(TAG).combine_chunks(), asked.column(DAY).combine_chunks()]
            + [pa.array(np.asarray(parts[name], dtype=np.float64)) for name in names],
            names=[USER_ID, MOVIE_ID, RATING, TAG, DAY, *names])

    schema = f"{USER_ID} int, {MOVIE_ID} int, {RATING} double, {TAG} int, {DAY} float, " + (
        ", ".join(f"{name} double" for name in names))
    return _bucketed(wanted, history, buckets, timed).mapInArrow(task, schema)


def top_n(model: FactorModel | BlendedModel, users: DataFrame, history: DataFrame, n: int,
          buckets: int) -> DataFrame:
    """The ``n`` best unrated movies for every row of ``users`` (the user side: user_id,
    b_user, ...; :func:`user_frame`), rated meaning in ``history`` (user_id, movie_id,
    rating[, day or rated_on]). With time effects the lists are for the model's latest day
    (the history's own days give its residuals). A blend of models ranks by
    :meth:`BlendedModel.top_n`."""
    import pyarrow as pa

    movie_model = model.movie_side()
    timed = _timed(model)
    side = _side_columns(model)
    wanted = users.select(USER_ID, F.lit(0).alias(MOVIE_ID),
                          F.lit(None).cast("float").alias(RATING), F.lit(1).alias(TAG), *side)

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        _, local, requests = _requests(table, movie_model)
        owners = requests.owner_users
        order = np.argsort(requests.history_owner, kind="stable")
        h_owner = requests.history_owner[order]
        h_movies, h_ratings = requests.history_movies[order], requests.history_ratings[order]
        h_days = None if requests.history_days is None else requests.history_days[order]
        # Bounded memory: a step of users x every movie at a time.
        step = max(1, 2_000_000 // max(1, len(local.movie_ids)))
        for start in range(0, len(owners), step):
            stop = min(start + step, len(owners))
            lo, hi = np.searchsorted(h_owner, [start, stop])
            owner, rank, movie, value = local.top_n(
                owners[start:stop], h_owner[lo:hi] - start, h_movies[lo:hi], h_ratings[lo:hi],
                n, None if h_days is None else h_days[lo:hi])
            yield pa.RecordBatch.from_arrays(
                [pa.array(owners[start:stop][owner].astype(np.int32)),
                 pa.array(rank.astype(np.int32)), pa.array(movie.astype(np.int32)),
                 pa.array(value.astype(np.float64))],
                names=[USER_ID, "rank", MOVIE_ID, "predicted_rating"])

    return _bucketed(wanted, history, buckets, timed, side).mapInArrow(task, TOP_SCHEMA)


def predictions(model: FactorModel) -> dict[str, Column]:
    """Spark columns over a parts frame (:func:`score`), from the model's rule: its prediction
    with a history, without one, and its ALS part alone."""
    return {PREDICTION: model.rule(with_history=True).column(),
            "prediction_without_history": model.rule(with_history=False).column(),
            "prediction_als": replace(model, neighbourhood=None, implicit=None).rule().column()}


def test_rmse(model: FactorModel, test: DataFrame, history: DataFrame, parallelism: int) -> float:
    """RMSE of ``model``'s prediction on ``test`` (user_id, movie_id, rating), each user's
    history taken from ``history`` (user_id, movie_id, rating)."""
    spark = test.sparkSession
    buckets = bucket_count(history.count(), parallelism)
    parts = score(model, user_frame(spark, model), test.withColumn(TAG, F.lit(TEST_TAG)),
                  history, buckets)
    return metrics.errors(parts.withColumn(PREDICTION, predictions(model)[PREDICTION])).rmse
