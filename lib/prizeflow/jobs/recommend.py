"""``prizeflow recommend``: top-N movies per user from the registered champion, into Delta.

    prizeflow recommend [--top 10] [--alias champion] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/recommend.py --top 10 --conf conf/<env>.yaml

Loads the model behind ``models:/<mlflow.registered_model>@<alias>`` and, for every user it knows,
scores the catalogue in Spark tasks with the model's own rule (:func:`prizeflow.scoring.top_n`):
each task holds a bucket of users with their ratings from the latest ``ratings`` table (the
history the neighbourhood term reads, and the movies not to recommend again). Overwrites the
Delta table ``recommendations`` (user_id, rank, movie_id, predicted_rating, model_version,
created_at).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from prizeflow import lake, partitions, scoring
from prizeflow.jobs.common import JobError, make_parser, run_job

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("recommend", "Write top-N recommendations per user from the champion.")
    parser.add_argument("--top", type=int, default=10, help="movies per user (default 10)")
    parser.add_argument("--alias", default="champion", help="registered model alias to use")
    return parser


def load_registered(config: dict[str, Any], alias: str):
    """(FactorModel, version) of ``models:/<name>@<alias>``."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from prizeflow import tracking

    tracking.configure(config)
    name = config["mlflow"]["registered_model"]
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise JobError(f"no model version of {name!r} has alias {alias!r}: "
                       "run `prizeflow register` first") from exc
    model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}").unwrap_python_model().model
    return model, int(version.version)


def run(spark: SparkSession, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.top < 1:
        raise JobError(f"--top must be at least 1, got {args.top}")
    model, version = load_registered(config, args.alias)
    ratings_path = lake.table_path(config["lake"]["root"], "ratings")
    if not lake.is_table(spark, ratings_path):
        raise JobError(f"no ratings table at {ratings_path}: run `prizeflow ingest` first")
    history = spark.read.format("delta").load(ratings_path).select("user_id", "movie_id",
                                                                   "rating")
    users = scoring.user_frame(spark, model)
    buckets = scoring.bucket_count(history.count(), partitions.parallelism(spark))
    created = datetime.now(timezone.utc).replace(tzinfo=None)
    recommendations = (scoring.top_n(model, users, history, args.top, buckets)
                       .withColumn("model_version", F.lit(version))
                       .withColumn("created_at", F.lit(created).cast("timestamp")))
    path = lake.table_path(config["lake"]["root"], "recommendations")
    (recommendations.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
     .save(path))
    written = spark.read.format("delta").load(path)
    counts = written.agg(F.count(F.lit(1)).alias("rows"),
                         F.countDistinct("user_id").alias("users")).first()
    return {"model_name": config["mlflow"]["registered_model"], "alias": args.alias,
            "model_version": version, "top": args.top, "users": int(counts["users"]),
            "rows": int(counts["rows"]), "table": path,
            "delta_version": lake.version(spark, path)}


def main(argv: list[str] | None = None) -> int:
    return run_job("recommend", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
