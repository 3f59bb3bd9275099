"""Baseline predictors: the global mean and the regularised mu + b_u + b_i model.

The biases are fitted by alternating ridge passes in Spark SQL (Koren, "Factor in the
neighbors", section 2.1): with the user biases fixed, each movie bias is the shrunk mean of its
residuals, b_i = sum(r - mu - b_u) / (reg + n_i); then the same for users. Two or three passes
converge to well within RMSE noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


@dataclass
class Biases:
    """mu plus per-user and per-movie offsets; ids missing from a table have offset 0."""
    mean: float
    users: DataFrame  # user_id, b_user
    movies: DataFrame  # movie_id, b_movie
    reg: float


def global_mean(ratings: DataFrame) -> float:
    value = ratings.agg(F.avg("rating")).first()[0]
    if value is None:
        raise ValueError("cannot fit a baseline on an empty training set")
    return float(value)


def fit_biases(ratings: DataFrame, reg: float, passes: int, mean: float | None = None) -> Biases:
    """Fit b_u and b_i on (user_id, movie_id, rating) rows; the result's tables are lazy."""
    mu = global_mean(ratings) if mean is None else mean
    rows = ratings.select("user_id", "movie_id", (F.col("rating") - F.lit(mu)).alias("centered"))
    users = None
    movies = None
    for _ in range(passes):
        with_users = rows if users is None else rows.join(users, "user_id", "left")
        user_part = F.coalesce(F.col("b_user"), F.lit(0.0)) if users is not None else F.lit(0.0)
        movies = (with_users.groupBy("movie_id")
                  .agg((F.sum(F.col("centered") - user_part) / (F.lit(reg) + F.count(F.lit(1))))
                       .alias("b_movie")))
        users = (rows.join(F.broadcast(movies), "movie_id", "left")
                 .groupBy("user_id")
                 .agg((F.sum(F.col("centered") - F.coalesce(F.col("b_movie"), F.lit(0.0)))
                       / (F.lit(reg) + F.count(F.lit(1)))).alias("b_user")))
    assert users is not None and movies is not None  # passes >= 1 is checked in config
    return Biases(mu, users, movies, float(reg))


def with_baseline(pairs: DataFrame, biases: Biases, column: str = "baseline") -> DataFrame:
    """Add mu + b_u + b_i for each (user_id, movie_id) row; unseen ids contribute 0."""
    joined = (pairs.join(biases.users, "user_id", "left")
              .join(F.broadcast(biases.movies), "movie_id", "left"))
    return (joined.withColumn(column, F.lit(biases.mean)
                              + F.coalesce(F.col("b_user"), F.lit(0.0))
                              + F.coalesce(F.col("b_movie"), F.lit(0.0)))
            .drop("b_user", "b_movie"))


def clip(value: Column, low: float, high: float) -> Column:
    return F.least(F.greatest(value, F.lit(low)), F.lit(high))
