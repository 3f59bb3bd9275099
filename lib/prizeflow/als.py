"""ALS on the residuals of the bias baseline (or on raw ratings), and prediction with fallbacks.

Prediction (the grid's, by :class:`prizeflow.rule.Rule`) for the residual kind is
clip(mu + b_u + b_i + p_u . q_i); a user or movie ALS never saw contributes no factor term, so
every row gets a prediction (the baseline at worst). The plain kind is textbook Spark ALS,
p_u . q_i, falling back to the global mean for unseen ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from prizeflow import scoring
from prizeflow.baselines import Biases
from prizeflow.columns import MOVIE_ID, PREDICTION, RATING, USER_ID
from prizeflow.factors import FactorModel
from prizeflow.grid import RESIDUAL, GridPoint
from prizeflow.rule import Rule
from prizeflow.sessions import connect_state, is_connect
from prizeflow.time_baseline import TimeEffects
from prizeflow.time_effects import USER_TIME, TimeBiases

@dataclass(frozen=True)
class AlsSettings:
    seed: int
    num_blocks: int
    checkpoint_interval: int


@dataclass
class FittedModel:
    point: GridPoint
    mean: float
    biases: Biases | TimeBiases | None
    als: ALSModel
    low: float
    high: float


# Ratings per ALS block: Spark builds each block's arrays in one task's memory, so the blocks
# follow the data as well as the cores (10M ratings: about 200 MB of arrays per block; 5M made
# 20 blocks at full size, whose factor shuffles cost more than they spread on few cores).
RATINGS_PER_BLOCK = 10_000_000


def default_blocks(ratings: int, parallelism: int) -> int:
    """ALS user and item blocks: one per core at least, more when blocks would be too big."""
    return max(1, parallelism, -(-ratings // RATINGS_PER_BLOCK))


def checkpoint_interval(max_iter: int, configured: int) -> int:
    """The checkpoint interval an explicit fit of ``max_iter`` iterations is given: the largest
    at most ``configured`` that divides ``max_iter - 1``, so that the last iteration is one
    MLlib checkpoints, unless that takes more than one checkpoint beyond what ``configured``
    takes (then ``configured``).

    Why: an explicit fit persists its item factors only in the iterations it checkpoints
    (``iteration % interval == 0``, from 0). After its loop it counts the item factors joined
    to their ids; unless the last iteration's factors were persisted, that count solves the
    last item half-step a second time (at 97M ratings 24-27 s of a 42 s iteration:
    BENCHMARKS.md). A checkpoint costs a small job and writes O(movies x rank); the factors
    are the same either way. 10 iterations at the default 10 get 9: iterations 0 and 9."""
    last = max_iter - 1

    def checkpoints(interval: int) -> int:
        return last // interval + 1

    if last <= 0:
        return configured  # the only iteration, 0, is checkpointed whatever the interval
    chosen = max(d for d in range(1, min(configured, last) + 1) if last % d == 0)
    return chosen if checkpoints(chosen) <= checkpoints(configured) + 1 else configured


def fit(point: GridPoint, training: DataFrame, settings: AlsSettings, mean: float,
        biases: Biases | TimeBiases | None, low: float, high: float) -> FittedModel:
    """Fit one grid point. ``training`` has (user_id, movie_id, residual) for the residual kind
    and (user_id, movie_id, rating) for the plain kind; it should be persisted by the caller."""
    target = "residual" if point.kind == RESIDUAL else RATING
    als = ALS(rank=point.rank, regParam=float(point.reg_param), maxIter=point.max_iter,
              userCol=USER_ID, itemCol=MOVIE_ID, ratingCol=target, seed=settings.seed,
              numUserBlocks=settings.num_blocks, numItemBlocks=settings.num_blocks,
              checkpointInterval=checkpoint_interval(point.max_iter,
                                                     settings.checkpoint_interval),
              coldStartStrategy="nan")
    fitted = als.fit(training)
    if is_connect(training.sparkSession):
        # Held until the session ends (SPARK-57655: see prizeflow.sessions.ConnectState).
        connect_state(training.sparkSession).keep(fitted)
    return FittedModel(point, mean, biases if point.kind == RESIDUAL else None, fitted, low, high)


def with_parts(model: FittedModel, pairs: DataFrame) -> DataFrame:
    """Add ``baseline`` (mu + b_u + b_i, or the time-aware one by each row's ``day``) and
    ``factor_term`` (p_u . q_i, 0 where ALS has no
    factors for the user or the movie) to every row; residual kind only."""
    if model.biases is None:
        raise ValueError("only residual ALS has a baseline and a factor term")
    scored = model.als.transform(pairs).withColumnRenamed(PREDICTION, "_factor")
    factor = F.coalesce(F.nanvl(F.col("_factor"), F.lit(None).cast("float")), F.lit(0.0))
    return (model.biases.with_baseline(scored, "baseline")
            .withColumn("factor_term", factor.cast("double")).drop("_factor"))


def predict(model: FittedModel, pairs: DataFrame, column: str = PREDICTION) -> DataFrame:
    """Add a prediction for every (user_id, movie_id) row of ``pairs``; never null or NaN."""
    if model.biases is not None:
        rule = Rule(model.low, model.high)
        scored = with_parts(model, pairs)
    else:
        rule = Rule.plain(model.mean, model.low, model.high)
        factor = model.als.transform(pairs).withColumnRenamed(PREDICTION, "factor_term")
        scored = factor.withColumn(
            "has_factors", F.nanvl(F.col("factor_term"), F.lit(None)).isNotNull())
    return scored.withColumn(column, rule.column()).drop("factor_term", "baseline", "has_factors")


def _side(factors: DataFrame, bias: DataFrame | None, key: str, bias_col: str,
          extra: tuple[str, ...] = ()):
    """One side's ids, biases and factors as numpy arrays, sorted by id (and the bias table's
    ``extra`` columns as a float64 (ids, len(extra)) array, NaN where missing)."""
    table = factors.select(F.col("id").alias(key), "features")
    if bias is not None:
        table = table.join(bias.select(key, bias_col, *extra), key, "full_outer")
    else:
        table = table.withColumn(bias_col, F.lit(0.0))
    frame = table.orderBy(key).toPandas()
    ids = frame[key].to_numpy(dtype=np.int64)
    has = frame["features"].notna().to_numpy()
    rank = len(frame["features"][has].iloc[0]) if has.any() else 0
    matrix = np.zeros((len(frame), rank), dtype=np.float32)
    if has.any():
        matrix[has] = np.stack(frame["features"][has].to_numpy()).astype(np.float32)
    side = (ids, frame[bias_col].fillna(0.0).to_numpy(dtype=np.float64), matrix, has)
    if extra:
        side += (frame[list(extra)].to_numpy(dtype=np.float64, na_value=np.nan),)
    return side


def _time_effects(biases, movie_ids: np.ndarray) -> TimeEffects | None:
    if not isinstance(biases, TimeBiases):
        return None
    return TimeEffects(biases.first_day, biases.last_day, biases.movie_bin_array(movie_ids))


def export_factors(model: FittedModel):
    """The fitted model as a Spark-free :class:`prizeflow.factors.FactorModel` (its arrays
    come to the driver: O(users x rank + movies x rank), and with time effects O(users +
    movies x bins))."""
    biases = model.biases
    timed = isinstance(biases, TimeBiases)
    user = _side(model.als.userFactors, biases.users if biases else None, USER_ID, "b_user",
                 USER_TIME if timed else ())
    movie = _side(model.als.itemFactors, biases.movies if biases else None, MOVIE_ID, "b_movie")
    user_time = None
    if timed:
        # A user ALS knows has a bias row too (both were fitted on the same ratings); the
        # guard keeps an unknown drift out of the arithmetic all the same.
        user_time = np.nan_to_num(user[4], nan=0.0)
    return FactorModel(model.point.kind, model.mean, model.low, model.high, *user[:4], *movie,
                       time=_time_effects(biases, movie[0]), user_time=user_time)


def export_movie_side(model: FittedModel):
    """The fitted model's movies only (O(movies x rank)); scoring in Spark brings each task
    its users' side (:func:`prizeflow.scoring.user_side`)."""
    biases = model.biases
    movie = _side(model.als.itemFactors, biases.movies if biases else None, MOVIE_ID, "b_movie")
    rank = movie[2].shape[1] if movie[2].shape[1] else model.point.rank
    time = _time_effects(biases, movie[0])
    return FactorModel(model.point.kind, model.mean, model.low, model.high,
                       np.zeros(0, dtype=np.int64), np.zeros(0),
                       np.zeros((0, rank), dtype=np.float32), np.zeros(0, dtype=bool), *movie,
                       time=time, user_time=None if time is None else np.zeros((0, 2)))


def user_side(model: FittedModel, users: DataFrame | None = None) -> DataFrame:
    """(user_id, b_user, factors) of the fitted model, in Spark; only ``users`` (user_id) when
    given, chosen before the factors are packed."""
    factors = model.als.userFactors
    biases = model.biases.users if model.biases else None
    if users is not None:
        ids = users.select(F.col(USER_ID).alias("id"))
        factors = factors.join(ids, "id", "left_semi")
        if biases is not None:
            biases = biases.join(users.select(USER_ID), USER_ID, "left_semi")
    return scoring.user_side(factors, biases)
