"""Batch scoring in Spark with the model's own numpy rule, users grouped into buckets.

The prediction rule lives once, in :mod:`prizeflow.factors`; this module only moves data to it.
Users are hashed into buckets, one Spark task per bucket; a task receives, for its users,

- the pairs to score, each carrying the user's side of the model (bias and factors), and
- the user's rating history (user, movie, rating), read from the lake by the caller and packed
  where it lies into a few rows of bytes per partition and bucket before it is shuffled,

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
from prizeflow.columns import MOVIE_ID, PREDICTION, RATING, TAG, USER_ID
from prizeflow.factors import FactorModel, Requests

ROWS_PER_BUCKET = 4_000_000
PACK_ROWS = 2_000_000  # history ratings a packing task holds at once (about 40 MB in Python)
BUCKET = "_pf_bucket"
# The packed history: (source column, packed column, bytes as numpy dtype), one row of each
# per partition and bucket.
PACKED_HISTORY = ((USER_ID, "history_users", "<i4"), (MOVIE_ID, "history_movies", "<i4"),
                  (RATING, "history_ratings", "<f4"))
PACKED = tuple(name for _, name, _ in PACKED_HISTORY)
VALIDATION_TAG, TEST_TAG = 1, 2  # the tags train scores its held-out parts under
PARTS = ("baseline", "factor_term", "neighbour_term", "implicit_term", "has_factors")
TOP_SCHEMA = f"{USER_ID} int, rank int, {MOVIE_ID} int, predicted_rating double"


def bucket_count(rows: int, parallelism: int) -> int:
    """At least two tasks per core, at most about ROWS_PER_BUCKET rows each."""
    return max(2 * parallelism, math.ceil(rows / ROWS_PER_BUCKET))


def _refuse_time_effects(model: FactorModel) -> None:
    # The tasks do not yet receive each user's drift or the ratings' days (issue 31, item 1):
    # scoring such a model here would put every rating at the latest day without saying so.
    if model.time is not None:
        raise ValueError("scoring in Spark does not yet carry the days a model with time "
                         "effects needs")


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
    """(user_id, b_user, factors) from ALS's ``userFactors`` (id, features) and the bias table
    (user_id, b_user); either may be missing for a user. ``factors``: float32 bytes."""
    frames = []
    if factors is not None:
        frames.append(_packed_factors(factors))
    if biases is not None:
        frames.append(biases.select(F.col(USER_ID).cast("int"), F.col("b_user").cast("double")))
    side = frames[0]
    for other in frames[1:]:
        side = side.join(other, USER_ID, "full_outer")
    for name, kind in (("b_user", DoubleType()), ("factors", BinaryType())):
        if name not in side.columns:
            side = side.withColumn(name, F.lit(None).cast(kind))
    return side.select(USER_ID, "b_user", "factors")


def user_frame(spark, model: FactorModel) -> DataFrame:
    """The user side of a loaded model as a Spark frame (user_id, b_user, factors): what
    :func:`score` and :func:`top_n` take when the model comes from the registry."""
    import pandas as pd

    has = model.user_has_factors
    frame = pd.DataFrame({
        USER_ID: model.user_ids.astype("int32"),
        "b_user": model.user_bias.astype("float64"),
        "factors": [row.tobytes() if keep else None for row, keep in
                    zip(model.user_factors.astype("<f4"), has)]})
    return spark.createDataFrame(frame, f"{USER_ID} int, b_user double, factors binary")


def _bucketed(wanted: DataFrame, history: DataFrame, buckets: int) -> DataFrame:
    """The rows to score and the packed history (:data:`PACKED_HISTORY`) of the same users,
    each in its user bucket's task. The history is packed where it lies, before the shuffle: a
    few large rows per partition instead of one per rating (97M at full scale)."""
    bucket = F.pmod(F.xxhash64(F.lit(3), F.col(USER_ID)), F.lit(buckets)).cast("int")
    rows = wanted.select(USER_ID, MOVIE_ID, F.col(RATING).cast("float"), TAG, "b_user",
                         "factors", bucket.alias(BUCKET))
    packed = partitions.pack(
        history.select(USER_ID, MOVIE_ID, F.col(RATING).cast("float"), bucket.alias(BUCKET)),
        BUCKET, PACKED_HISTORY, PACK_ROWS)
    both = rows.unionByName(packed, allowMissingColumns=True)
    return partitions.by_task(both, F.col(BUCKET), buckets).drop(BUCKET)


def _local_model(movie_model: FactorModel, users: np.ndarray, b_user: np.ndarray,
                 factors) -> FactorModel:
    """The movie side plus these users' side, from one task's rows (the first row of a user
    carries it)."""
    ids, first = np.unique(users, return_index=True)
    bias = np.nan_to_num(np.asarray(b_user, dtype=np.float64)[first], nan=0.0)
    chosen = factors.take(first).to_pylist()
    has = np.array([blob is not None for blob in chosen], dtype=bool)
    rank = movie_model.rank
    matrix = np.zeros((len(ids), rank), dtype=np.float32)
    if has.any():
        matrix[has] = np.frombuffer(b"".join(b for b in chosen if b is not None),
                                    dtype="<f4").reshape(-1, rank)
    return movie_model.with_users(ids, bias, matrix, has)


def _requests(table, movie_model: FactorModel):
    """(the rows to score, the task's model, its Requests) from one task's rows."""
    import pyarrow as pa

    is_packed = table.column(PACKED[0]).is_valid().to_numpy(zero_copy_only=False)
    asked = table.filter(pa.array(~is_packed))
    past = table.filter(pa.array(is_packed))
    asked_users = asked.column(USER_ID).to_numpy().astype(np.int64)
    local = _local_model(movie_model, asked_users,
                         asked.column("b_user").to_numpy(zero_copy_only=False),
                         asked.column("factors").combine_chunks())
    history = tuple(partitions.binary_values(past.column(name), dtype)[0]
                    for _, name, dtype in PACKED_HISTORY)
    requests = Requests.by_user(asked_users, asked.column(MOVIE_ID).to_numpy(), history)
    return asked, local, requests


def score(model: FactorModel, users: DataFrame, wanted: DataFrame, history: DataFrame,
          buckets: int) -> DataFrame:
    """Score every row of ``wanted`` (user_id, movie_id, rating, tag > 0) in Spark tasks.

    ``users``: the user side (see :func:`user_side`); ``history``: (user_id, movie_id, rating),
    the ratings each user's neighbour and implicit terms draw on. Returns the rows with the
    parts of :meth:`FactorModel.parts` (``has_factors`` as 1.0 / 0.0; ``neighbour_term`` and
    ``implicit_term`` 0 when the model has no such term), which :meth:`FactorModel.combine` or
    its Spark form turn into predictions."""
    import pyarrow as pa

    _refuse_time_effects(model)
    names = PARTS
    movie_model = model.movie_side()
    if model.neighbourhood is None:
        # Only the history terms read a history: without them, no rating leaves the lake.
        history = history.where(F.lit(False))
    wanted = wanted.select(USER_ID, MOVIE_ID, RATING, TAG).join(users, USER_ID, "left")

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        asked, local, requests = _requests(table, movie_model)
        parts = local.parts(requests)
        for name in ("neighbour_term", "implicit_term"):
            parts.setdefault(name, np.zeros(len(requests.owner)))
        yield pa.RecordBatch.from_arrays(
            [asked.column(USER_ID).combine_chunks(), asked.column(MOVIE_ID).combine_chunks(),
             pa.array(asked.column(RATING).to_numpy().astype(np.float64)),
             asked.column(TAG).combine_chunks()]
            + [pa.array(np.asarray(parts[name], dtype=np.float64)) for name in names],
            names=[USER_ID, MOVIE_ID, RATING, TAG, *names])

    schema = f"{USER_ID} int, {MOVIE_ID} int, {RATING} double, {TAG} int, " + ", ".join(
        f"{name} double" for name in names)
    return _bucketed(wanted, history, buckets).mapInArrow(task, schema)


def top_n(model: FactorModel, users: DataFrame, history: DataFrame, n: int,
          buckets: int) -> DataFrame:
    """The ``n`` best unrated movies for every row of ``users`` (the user side: user_id,
    b_user, factors), rated meaning in ``history`` (user_id, movie_id, rating)."""
    import pyarrow as pa

    _refuse_time_effects(model)
    movie_model = model.movie_side()
    wanted = users.select(USER_ID, F.lit(0).alias(MOVIE_ID),
                          F.lit(None).cast("float").alias(RATING), F.lit(1).alias(TAG),
                          "b_user", "factors")

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        _, local, requests = _requests(table, movie_model)
        owners = requests.owner_users
        order = np.argsort(requests.history_owner, kind="stable")
        h_owner = requests.history_owner[order]
        h_movies, h_ratings = requests.history_movies[order], requests.history_ratings[order]
        # Bounded memory: a step of users x every movie at a time.
        step = max(1, 2_000_000 // max(1, len(local.movie_ids)))
        for start in range(0, len(owners), step):
            stop = min(start + step, len(owners))
            lo, hi = np.searchsorted(h_owner, [start, stop])
            owner, rank, movie, value = local.top_n(owners[start:stop], h_owner[lo:hi] - start,
                                                    h_movies[lo:hi], h_ratings[lo:hi], n)
            yield pa.RecordBatch.from_arrays(
                [pa.array(owners[start:stop][owner].astype(np.int32)),
                 pa.array(rank.astype(np.int32)), pa.array(movie.astype(np.int32)),
                 pa.array(value.astype(np.float64))],
                names=[USER_ID, "rank", MOVIE_ID, "predicted_rating"])

    return _bucketed(wanted, history, buckets).mapInArrow(task, TOP_SCHEMA)


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
