"""What a training run reads: the ratings and the probe pairs as one complete ingest left them
(:mod:`prizeflow.snapshots`), their scale, and the deterministic split into train / validation /
test.

    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = split_ratings(data, config, method)      # ratings with a `split` column

``register`` re-scores a champion on a candidate's test set the same way, with the candidate's
split config and data version.

The ``qualifying`` pairs (the Prize's hidden ratings: who rated what, without the rating) are
read too: every history a model scores with (:func:`with_unrated`) holds them as rows without
a rating, so they are part of N(u), the movies a user rated, as in Koren's SVD++.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import lake, snapshots, splits
from prizeflow.columns import DAY, MOVIE_ID, RATED_ON, RATING, USER_ID
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.time_effects import day_number

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
    snapshot: snapshots.Snapshot | None = None
    unrated: DataFrame | None = None  # user_id, movie_id, rated_on: see unrated_pairs


def load_training_data(spark: SparkSession, config: Config) -> TrainingData:
    """The ratings and the probe pairs as one complete ingest left them (the last one, or the
    last that left ``ratings`` at ``data.version``), and the ratings' scale."""
    root = config.lake.root
    snapshot = snapshots.for_reading(spark, root, config.data.version)
    path = lake.table_path(root, "ratings")
    version = snapshot.version("ratings")
    ratings = (lake.read(spark, path, version)
               .select(USER_ID, MOVIE_ID, RATING, RATED_ON))
    props = lake.properties(spark, path)
    low = float(props.get("prizeflow.rating_low", 1.0))
    high = float(props.get("prizeflow.rating_high", 5.0))
    probe_path = lake.table_path(root, "probe")
    probe_version = snapshot.version("probe")
    wanted = config.data.probe_version
    if wanted is not None:
        latest = lake.version(spark, probe_path)
        if latest is None or not 0 <= wanted <= latest:
            raise JobError(f"data.probe_version {wanted} does not exist: probe versions are "
                           f"{'none' if latest is None else f'0..{latest}'}")
        probe_version = wanted
    probe = None
    if probe_version is not None:
        # At a fixed version: an ingest committing meanwhile cannot change the test set.
        probe = lake.read(spark, probe_path, probe_version).select(USER_ID, MOVIE_ID)
    logger.info("reading the lake as ingest %s left it (ratings v%d, probe %s)",
                snapshot.ingest_id, version,
                "none" if probe_version is None else f"v{probe_version}")
    return TrainingData(ratings, path, version, low, high, probe, probe_version, snapshot,
                        unrated_pairs(spark, root, snapshot))


def unrated_pairs(spark: SparkSession, root: str,
                  snapshot: snapshots.Snapshot) -> DataFrame | None:
    """The pairs known to be rated whose ratings are hidden, as the ingest left them: the
    ``qualifying`` table's (user_id, movie_id, rated_on); None when the lake has none."""
    if snapshot.version("qualifying") is None:
        return None
    return snapshot.read(spark, root, "qualifying").select(USER_ID, MOVIE_ID, RATED_ON)


def with_unrated(history: DataFrame, unrated: DataFrame | None) -> DataFrame:
    """``history`` (user_id, movie_id, rating and ``rated_on`` or ``day`` or neither) with the
    ``unrated`` pairs as rows whose rating is null. Scoring counts them in N(u) (the implicit
    term's user side, and the movies ``recommend`` leaves out); the neighbour and day terms,
    which need a rating, skip them."""
    if unrated is None:
        return history
    kinds = history.schema
    rows = unrated.select(USER_ID, MOVIE_ID, RATED_ON,
                          F.lit(None).cast(kinds[RATING].dataType).alias(RATING))
    if DAY in history.columns:
        rows = rows.withColumn(DAY, day_number(F.col(RATED_ON)).cast(kinds[DAY].dataType))
    return history.unionByName(rows.select(*history.columns))


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
