"""What a training run reads: the ratings at a pinned Delta version, their scale, the probe pairs,
and the deterministic split into train / validation / test.

    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = split_ratings(data, config, method)      # ratings with a `split` column

``register`` re-scores a champion on a candidate's test set the same way, with the candidate's
split config and data version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import lake, splits
from prizeflow.config import Config
from prizeflow.errors import JobError

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    ratings: DataFrame  # user_id, movie_id, rating, rated_on
    ratings_path: str
    version: int
    low: float
    high: float
    probe: DataFrame | None
    probe_version: int | None


def load_training_data(spark: SparkSession, config: Config) -> TrainingData:
    """The ratings at the pinned (or latest) Delta version, their scale, and the probe pairs."""
    root = config.lake.root
    path = lake.table_path(root, "ratings")
    latest = lake.version(spark, path)
    if latest is None:
        raise JobError(f"no ratings table at {path}: run `prizeflow ingest` first")
    wanted = config.data.version
    if wanted is not None and not 0 <= wanted <= latest:
        raise JobError(f"data.version {wanted} does not exist: ratings versions are 0..{latest}")
    version = latest if wanted is None else wanted
    ratings = (lake.read(spark, path, version)
               .select("user_id", "movie_id", "rating", "rated_on"))
    props = lake.properties(spark, path)
    low = float(props.get("prizeflow.rating_low", 1.0))
    high = float(props.get("prizeflow.rating_high", 5.0))
    probe_path = lake.table_path(root, "probe")
    probe_version = _probe_version(spark, config, probe_path, path, version, latest)
    probe = None
    if probe_version is not None:
        # At a fixed version: an ingest committing meanwhile cannot change the test set.
        probe = lake.read(spark, probe_path, probe_version).select("user_id", "movie_id")
    return TrainingData(ratings, path, version, low, high, probe, probe_version)


def _probe_version(spark: SparkSession, config: Config, probe_path: str, ratings_path: str,
                   ratings_version: int, ratings_latest: int) -> int | None:
    """``data.probe_version`` if set; else the probe as it was while ``ratings`` stood at the
    version read (its last commit before the next ratings commit), so ``data.version=N`` gives
    the same test set after later ingests; else the latest."""
    latest = lake.version(spark, probe_path)
    wanted = config.data.probe_version
    if wanted is not None:
        if latest is None or not 0 <= wanted <= latest:
            raise JobError(f"data.probe_version {wanted} does not exist: probe versions are "
                           f"{'none' if latest is None else f'0..{latest}'}")
        return wanted
    if latest is None or ratings_version == ratings_latest:
        return latest
    next_commit = (lake.history(spark, ratings_path)
                   .where(f"version = {ratings_version + 1}").select("timestamp").first())
    if next_commit is None:  # that history was cleaned up: only the latest probe is knowable
        logger.warning("ratings version %d has no recorded successor: the probe is read at its "
                       "latest version %d (set data.probe_version to choose)", ratings_version,
                       latest)
        return latest
    before = (lake.history(spark, probe_path)
              .where(F.col("timestamp") < F.lit(next_commit[0])).agg(F.max("version")).first()[0])
    return None if before is None else int(before)


def choose_split_method(config: Config, data: TrainingData) -> str:
    method = config.split.method
    has_probe = data.probe is not None and data.probe.limit(1).count() > 0
    if method == "auto":
        return "probe" if has_probe else "hash"
    if method == "probe" and not has_probe:
        raise JobError("split.method is 'probe' but there is no non-empty probe table")
    return method


def split_ratings(data: TrainingData, config: Config, method: str) -> DataFrame:
    conf = config.split
    if method == "probe":
        return splits.probe_split(data.ratings, data.probe, conf.validation_fraction,
                                  conf.seed)
    if method == "chronological":
        return splits.chronological_split(data.ratings, conf.test_fraction,
                                          conf.validation_fraction)
    return splits.hash_split(data.ratings, conf.test_fraction, conf.validation_fraction,
                             conf.seed, conf.folds, conf.fold)
