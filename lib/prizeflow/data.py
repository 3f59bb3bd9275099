"""What a training run reads: the ratings at a pinned Delta version, their scale, the probe pairs,
and the deterministic split into train / validation / test.

    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = split_ratings(data, config, method)      # ratings with a `split` column

``test_pairs`` gives the test set a run with a given config was scored on (``register`` re-scores
a champion on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from prizeflow import lake, splits
from prizeflow.errors import JobError


@dataclass
class TrainingData:
    ratings: DataFrame  # user_id, movie_id, rating, rated_on
    ratings_path: str
    version: int
    low: float
    high: float
    probe: DataFrame | None
    probe_version: int | None


def load_training_data(spark: SparkSession, config: dict[str, Any]) -> TrainingData:
    """The ratings at the pinned (or latest) Delta version, their scale, and the probe pairs."""
    root = config["lake"]["root"]
    path = lake.table_path(root, "ratings")
    latest = lake.version(spark, path)
    if latest is None:
        raise JobError(f"no ratings table at {path}: run `prizeflow ingest` first")
    wanted = config["data"]["version"]
    if wanted is not None and not 0 <= wanted <= latest:
        raise JobError(f"data.version {wanted} does not exist: ratings versions are 0..{latest}")
    version = latest if wanted is None else wanted
    ratings = (spark.read.format("delta").option("versionAsOf", version).load(path)
               .select("user_id", "movie_id", "rating", "rated_on"))
    props = lake.properties(spark, path)
    low = float(props.get("prizeflow.rating_low", 1.0))
    high = float(props.get("prizeflow.rating_high", 5.0))
    probe_path = lake.table_path(root, "probe")
    probe_version = lake.version(spark, probe_path)
    probe = None
    if probe_version is not None:
        probe = spark.read.format("delta").load(probe_path).select("user_id", "movie_id")
    return TrainingData(ratings, path, version, low, high, probe, probe_version)


def choose_split_method(config: dict[str, Any], data: TrainingData) -> str:
    method = config["split"]["method"]
    has_probe = data.probe is not None and data.probe.limit(1).count() > 0
    if method == "auto":
        return "probe" if has_probe else "hash"
    if method == "probe" and not has_probe:
        raise JobError("split.method is 'probe' but there is no non-empty probe table")
    return method


def split_ratings(data: TrainingData, config: dict[str, Any], method: str) -> DataFrame:
    conf = config["split"]
    if method == "probe":
        return splits.probe_split(data.ratings, data.probe, conf["validation_fraction"],
                                  conf["seed"])
    if method == "chronological":
        return splits.chronological_split(data.ratings, conf["test_fraction"],
                                          conf["validation_fraction"])
    return splits.hash_split(data.ratings, conf["test_fraction"], conf["validation_fraction"],
                             conf["seed"], conf["folds"], conf["fold"])


def test_pairs(spark: SparkSession, config: dict[str, Any]) -> tuple[DataFrame, int, str]:
    """The test ratings a run with this config (data version and split) was scored on."""
    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = split_ratings(data, config, method)
    return (splits.part(split, splits.TEST).select("user_id", "movie_id", "rating"),
            data.version, method)
