"""A blend of models (:mod:`prizeflow.model_blend`) scored in Spark: each member by its own rule
(:func:`prizeflow.scoring.score`), their predictions joined by rating, then combined by the
blend's weights. What the blend job learns its weights on, the gate re-scores a blended
champion with, and batch predictions use."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from prizeflow import metrics, scoring
from prizeflow.columns import MOVIE_ID, PREDICTION, RATING, TAG, USER_ID
from prizeflow.factors import FactorModel
from prizeflow.model_blend import BlendedModel, member_column

KEYS = (USER_ID, MOVIE_ID, TAG)


def member_predictions(members: tuple[FactorModel, ...], wanted: DataFrame, history: DataFrame,
                       buckets: int) -> DataFrame:
    """``wanted`` (user_id, movie_id, rating, tag[, rated_on]) as (user_id, movie_id, tag,
    rating) with each member's prediction with and without a history
    (:func:`prizeflow.model_blend.member_column`), each member scored by its own rule with
    ``history`` as the users' ratings."""
    spark = wanted.sparkSession
    joined = None
    for index, member in enumerate(members):
        parts = scoring.score(member, scoring.user_frame(spark, member), wanted, history, buckets)
        rules = scoring.predictions(member)
        scored = parts.select(*KEYS, *([RATING] if joined is None else []),
                              rules[PREDICTION].alias(member_column(index)),
                              rules["prediction_without_history"].alias(
                                  member_column(index, with_history=False)))
        joined = scored if joined is None else joined.join(scored, list(KEYS))
    return joined


def blended_column(model: BlendedModel, with_history: bool = True) -> Column:
    """The blend's clipped prediction over :func:`member_predictions`' columns."""
    weights = model.weights if with_history else model.weights_without
    raw = F.lit(weights[0])
    for index, weight in enumerate(weights[1:]):
        raw = raw + F.lit(weight) * F.col(member_column(index, with_history))
    return F.least(F.greatest(raw, F.lit(model.low)), F.lit(model.high))


def test_rmse(model: BlendedModel, test: DataFrame, history: DataFrame, parallelism: int) -> float:
    """RMSE of the blend on ``test`` (user_id, movie_id, rating[, rated_on]), each user's history
    from ``history``: :func:`prizeflow.scoring.test_rmse` for a blend."""
    buckets = scoring.bucket_count(history.count(), parallelism)
    scored = member_predictions(model.members, test.withColumn(TAG, F.lit(scoring.TEST_TAG)),
                                history, buckets)
    return metrics.errors(scored.withColumn(PREDICTION, blended_column(model))).rmse
