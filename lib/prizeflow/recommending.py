"""Batch recommendations: top-N movies per user from a registered model, into Delta.

:func:`recommend` (what ``prizeflow recommend`` runs) loads ``models:/<mlflow.registered_model>@
<alias>`` and, for every user the model knows, scores the catalogue in Spark tasks with the
model's own rule (:func:`prizeflow.scoring.top_n`): each task holds a bucket of users with their
ratings as the last complete ingest left them (the history the neighbourhood term reads, and the
movies not to recommend again) and its qualifying pairs (movies rated, the rating hidden: in N(u),
and not recommended either). It replaces the rows of the Delta table ``recommendations``
(:data:`prizeflow.lake.RECOMMENDATIONS`) in one commit. A registered blend of models ranks
by the blend (:meth:`prizeflow.model_blend.BlendedModel.top_n`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from prizeflow import data, lake, partitions, registry, scoring, snapshots, tracking
from prizeflow.columns import MOVIE_ID, RATED_ON, RATING, USER_ID
from prizeflow.config import Config
from prizeflow.errors import JobError

logger = logging.getLogger(__name__)


def recommend(spark: SparkSession, config: Config, top: int = 10,
              alias: str = "champion") -> dict[str, Any]:
    """Write the ``top`` best unrated movies of every user; the summary."""
    check_top(top)
    model, version, snapshot, history, buckets = registered_model_and_history(
        spark, config, alias)
    root = config.lake.root
    created = datetime.now(timezone.utc).replace(tzinfo=None)
    logger.info("scoring every user's unrated movies in %d buckets", buckets)
    recommendations = (scoring.top_n(model, scoring.user_frame(spark, model), history, top, buckets)
                       .withColumn("model_version", F.lit(version))
                       .withColumn("created_at", F.lit(created).cast("timestamp")))
    path = lake.table_path(root, "recommendations")
    lake.overwrite(spark, recommendations, path, lake.RECOMMENDATIONS)
    counts = lake.read(spark, path).agg(F.count(F.lit(1)).alias("rows"),
                                        F.countDistinct(USER_ID).alias("users")).first()
    logger.info("wrote %d recommendations for %d users to %s", counts["rows"], counts["users"],
                path)
    return {"model_name": config.mlflow.registered_model, "alias": alias,
            "model_version": version, "top": top,
            "users": int(counts["users"]), "rows": int(counts["rows"]), "table": path,
            "delta_version": lake.version(spark, path), "ingest_id": snapshot.ingest_id,
            "ratings_version": snapshot.version("ratings")}


def registered_model_and_history(spark: SparkSession, config: Config, alias: str):
    """What batch scoring from the registry starts from: ``models:/<registered_model>@<alias>``
    and its version, the snapshot of the last complete ingest, its ratings (user_id, movie_id,
    rating, rated_on: each user's history) with its qualifying pairs as rows without a rating
    (:func:`prizeflow.data.with_unrated`: in N(u), and never recommended), and the number of
    user buckets to score them in."""
    tracking.configure(config)
    name = config.mlflow.registered_model
    started = time.monotonic()
    model, version = registry.load_model(name, alias)
    logger.info("model version %s: %d users, %d movies, loaded in %.1f s", version,
                len(model.user_ids), len(model.movie_ids), time.monotonic() - started)
    root = config.lake.root
    # The ratings as the last complete ingest left them, never half of a running one.
    snapshot = snapshots.for_reading(spark, root)
    # rated_on: a model with time effects takes each history rating at its day.
    ratings = snapshot.read(spark, root, "ratings").select(USER_ID, MOVIE_ID, RATING, RATED_ON)
    buckets = scoring.bucket_count(ratings.count(), partitions.parallelism(spark),
                                   scoring.BATCH_ROWS_PER_BUCKET)
    history = data.with_unrated(ratings, data.unrated_pairs(spark, root, snapshot))
    return model, version, snapshot, history, buckets


def check_top(top: int) -> None:
    if top < 1:
        raise JobError(f"--top must be at least 1, got {top}")
