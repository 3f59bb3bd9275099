"""Ranking quality of top-k lists on the test split: precision@k, recall@k and NDCG@k.

``train`` measures its final model with :func:`model_and_popularity` (stage ``ranking quality``):

- relevant: a test rating of at least :data:`RELEVANT_RATING` (4 stars);
- candidates: every movie the user did not rate in the ratings the model was fitted on (the
  test movies are among them);
- users: a fixed hash sample (same data and seed, same users) of ``train.ranking_users`` test
  users with at least one relevant rating (10,000 by default): the lists are built for those
  users only, and only their factors are packed, though the sampling and the popularity counts
  still read every rating once;
- the model's lists come from the rule every path uses (:func:`prizeflow.scoring.top_n`); beside
  them, a popularity baseline: the k movies most rated in training that the user has not rated
  (from the :data:`POPULAR_POOL` most rated; a user who rated nearly all of those gets a shorter
  list, which counts as misses).

A sampled user with no list (unknown to the model) counts as k misses. Everything runs in Spark;
the driver receives the figures and the ids of the :data:`POPULAR_POOL` most-rated movies.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from prizeflow import scoring
from prizeflow.columns import MOVIE_ID, RATING, USER_ID
from prizeflow.factors import FactorModel

K = 10
RELEVANT_RATING = 4.0
POPULAR_POOL = 1000


def relevant(test: DataFrame) -> DataFrame:
    """(user_id, movie_id) of the test ratings that count as relevant."""
    return test.where(F.col(RATING) >= RELEVANT_RATING).select(USER_ID, MOVIE_ID)


def sample_users(relevant_pairs: DataFrame, users: int, seed: int) -> DataFrame:
    """``users`` users with a relevant test rating, in a fixed hash order (user_id)."""
    return (relevant_pairs.select(USER_ID).distinct()
            .orderBy(F.xxhash64(F.lit(seed), F.col(USER_ID)), USER_ID).limit(users))


def popularity_top(history: DataFrame, users: DataFrame, k: int = K,
                   pool: int = POPULAR_POOL) -> DataFrame:
    """(user_id, rank, movie_id): for each of ``users``, the ``k`` movies most rated in
    ``history`` (user_id, movie_id) that the user has not rated there."""
    counts = history.groupBy(MOVIE_ID).agg(F.count(F.lit(1)).alias("_ratings"))
    # At most ``pool`` movie ids reach the driver, to number them in order.
    ids = [r[MOVIE_ID] for r in counts.orderBy(F.desc("_ratings"), MOVIE_ID).limit(pool)
           .select(MOVIE_ID).collect()]
    popular = history.sparkSession.createDataFrame(
        [(movie, order) for order, movie in enumerate(ids, 1)], f"{MOVIE_ID} int, _order int")
    pairs = users.select(USER_ID).crossJoin(F.broadcast(popular))
    rated = history.select(USER_ID, MOVIE_ID).join(F.broadcast(users.select(USER_ID)), USER_ID,
                                                   "left_semi")
    unrated = pairs.join(rated, [USER_ID, MOVIE_ID], "left_anti")
    rank = F.row_number().over(Window.partitionBy(USER_ID).orderBy("_order"))
    return (unrated.withColumn("rank", rank).where(F.col("rank") <= k)
            .select(USER_ID, "rank", MOVIE_ID))


def quality(top: DataFrame, relevant_pairs: DataFrame, users: DataFrame,
            k: int = K) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k over ``users`` of the lists ``top`` (user_id, rank,
    movie_id; rank from 1) against ``relevant_pairs`` (user_id, movie_id)."""
    wanted = relevant_pairs.join(users.select(USER_ID), USER_ID, "left_semi")
    per_user = wanted.groupBy(USER_ID).agg(F.count(F.lit(1)).alias("_relevant"))
    gains = (top.where(F.col("rank") <= k).join(wanted, [USER_ID, MOVIE_ID])
             .groupBy(USER_ID).agg(F.count(F.lit(1)).alias("_hits"),
                                   F.sum(1.0 / F.log2(F.col("rank") + 1)).alias("_dcg")))
    ideal = F.aggregate(F.sequence(F.lit(1), F.least(F.col("_relevant"), F.lit(k))),
                        F.lit(0.0), lambda total, r: total + 1.0 / F.log2(r + 1))
    row = (per_user.join(gains, USER_ID, "left").fillna(0, ["_hits", "_dcg"])
           .agg(F.avg(F.col("_hits") / k).alias("precision"),
                F.avg(F.col("_hits") / F.col("_relevant")).alias("recall"),
                F.avg(F.col("_dcg") / ideal).alias("ndcg"),
                F.count(F.lit(1)).alias("users"))
           .first())
    return {f"precision_at_{k}": float(row["precision"] or 0.0),
            f"recall_at_{k}": float(row["recall"] or 0.0),
            f"ndcg_at_{k}": float(row["ndcg"] or 0.0), "users": int(row["users"])}


def model_and_popularity(model: FactorModel, user_side: Callable[[DataFrame], DataFrame],
                         test: DataFrame, history: DataFrame, users: int, seed: int,
                         buckets: int) -> dict[str, dict[str, float]]:
    """The model's and the popularity baseline's figures (:func:`quality`) on ``users``
    sampled test users; ``user_side(sample)`` gives the sampled users' (user_id, b_user,
    factors), and ``history`` (user_id, movie_id, rating) is what the model was fitted on, as
    :func:`prizeflow.scoring.top_n` takes them: with the pairs rated without a known rating
    (rating null), which neither list offers and which count among a movie's raters."""
    relevant_pairs = relevant(test)
    sample = F.broadcast(sample_users(relevant_pairs, users, seed))
    own_history = history.join(sample, USER_ID, "left_semi")
    lists = scoring.top_n(model, user_side(sample), own_history, K, buckets)
    return {"model": quality(lists, relevant_pairs, sample),
            "popularity": quality(popularity_top(history, sample), relevant_pairs, sample)}
