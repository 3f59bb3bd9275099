"""Exploration for ``notebooks/04_explore.py``: what is in the lake. What a training run found
is read with :class:`prizeflow.train_runs.TrainRun` and drawn by :mod:`prizeflow.plots`."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from prizeflow.columns import RATING


def rating_distribution(ratings: DataFrame) -> DataFrame:
    """(rating, ratings, share) with one row per rating value, in rating order."""
    counts = ratings.groupBy(RATING).agg(F.count(F.lit(1)).alias("ratings"))
    total = F.sum("ratings").over(Window.partitionBy())
    return counts.withColumn("share", F.col("ratings") / total).orderBy(RATING)
