"""Baseline predictors: the global mean and the regularised mu + b_u + b_i model.

The biases are fitted by alternating ridge passes in Spark SQL (Koren, "Factor in the
neighbors", section 2.1): with the user biases fixed, each movie bias is the shrunk mean of its
residuals, b_i = sum(r - mu - b_u) / (reg + n_i); then the same for users. Two or three passes
converge to well within RMSE noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from prizeflow.columns import DAY, MOVIE_ID, RATING, USER_ID


@dataclass
class Biases:
    """mu plus per-user and per-movie offsets; ids missing from a table have offset 0."""
    mean: float
    users: DataFrame  # user_id, b_user
    movies: DataFrame  # movie_id, b_movie
    reg: float

    def with_baseline(self, pairs: DataFrame, column: str = "baseline") -> DataFrame:
        """What every baseline offers (the time-aware one too): ``pairs`` with its value."""
        return with_baseline(pairs, self, column)


def global_mean(ratings: DataFrame) -> float:
    value = ratings.agg(F.avg(RATING)).first()[0]
    if value is None:
        raise ValueError("cannot fit a baseline on an empty training set")
    return float(value)


def fit_biases(ratings: DataFrame, reg: float, passes: int, mean: float | None = None) -> Biases:
    """Fit b_u and b_i on (user_id, movie_id, rating) rows (cache them first: each pass scans
    them twice). The bias tables are small (a row per user or per movie): each pass's tables are
    materialised as local checkpoints before the next and joined by broadcast, so the ratings
    are never shuffled. Spark frees a checkpoint once nothing refers to it."""
    mu = global_mean(ratings) if mean is None else mean
    rows = ratings.select(USER_ID, MOVIE_ID, (F.col(RATING) - F.lit(mu)).alias("centered"))
    users = None
    movies = None
    for _ in range(passes):
        with_users = rows if users is None else rows.join(F.broadcast(users), USER_ID, "left")
        user_part = F.coalesce(F.col("b_user"), F.lit(0.0)) if users is not None else F.lit(0.0)
        new_movies = materialised(
            with_users.groupBy(MOVIE_ID)
            .agg((F.sum(F.col("centered") - user_part) / (F.lit(reg) + F.count(F.lit(1))))
                 .alias("b_movie")))
        new_users = materialised(
            rows.join(F.broadcast(new_movies), MOVIE_ID, "left")
            .groupBy(USER_ID)
            .agg((F.sum(F.col("centered") - F.coalesce(F.col("b_movie"), F.lit(0.0)))
                  / (F.lit(reg) + F.count(F.lit(1)))).alias("b_user")))
        users, movies = new_users, new_movies
    assert users is not None and movies is not None  # passes >= 1 is checked in config
    return Biases(mu, users, movies, float(reg))


def materialised(table: DataFrame) -> DataFrame:
    # A local checkpoint, not a cache: each pass's table would otherwise carry every earlier
    # pass in its plan, and Spark prints a cached plan inside each plan that reads it (twice
    # under adaptive execution), so plan strings double per pass and ran the driver out of
    # memory once a refit fitted biases on top of the residuals. These tables hold a row per
    # user or movie; losing an executor loses them like any cached block.
    return table.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)


def with_baseline(pairs: DataFrame, biases: Biases, column: str = "baseline") -> DataFrame:
    """Add mu + b_u + b_i for each (user_id, movie_id) row; unseen ids contribute 0."""
    # Both bias tables are a row per user or movie: broadcast, the pairs are never shuffled.
    joined = (pairs.join(F.broadcast(biases.users), USER_ID, "left")
              .join(F.broadcast(biases.movies), MOVIE_ID, "left"))
    return (joined.withColumn(column, F.lit(biases.mean)
                              + F.coalesce(F.col("b_user"), F.lit(0.0))
                              + F.coalesce(F.col("b_movie"), F.lit(0.0)))
            .drop("b_user", "b_movie"))


def clip(value: Column, low: float, high: float) -> Column:
    return F.least(F.greatest(value, F.lit(low)), F.lit(high))


def residuals(ratings: DataFrame, biases) -> DataFrame:
    """(user_id, movie_id, rating[, day], residual) with residual = rating - the baseline
    (:class:`Biases` or :class:`prizeflow.time_effects.TimeBiases`, which reads the day)."""
    kept = [name for name in (USER_ID, MOVIE_ID, RATING, DAY) if name in ratings.columns]
    return (biases.with_baseline(ratings.select(*kept))
            .select(*kept, (F.col(RATING) - F.col("baseline")).alias("residual")))
