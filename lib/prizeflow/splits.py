"""Train / validation / test splits of the ratings, as a ``split`` column.

Every split is a pure function of the ratings (and the probe pairs) plus config: no random
generator state, so the same Delta version and the same config give the same split on any
cluster, any partitioning, any day. ALS also needs this: it fails on non-deterministic input when
a lost partition is recomputed differently.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from prizeflow.columns import MOVIE_ID, RATED_ON, USER_ID

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLIT = "split"
_HASH_RANGE = 1 << 30


def unit_hash(seed: int, *columns: str) -> Column:
    """A uniform number in [0, 1) fixed by the seed and the row's key columns."""
    return F.pmod(F.xxhash64(F.lit(seed), *[F.col(c) for c in columns]),
                  F.lit(_HASH_RANGE)) / float(_HASH_RANGE)


def hash_split(ratings: DataFrame, test_fraction: float, validation_fraction: float, seed: int,
               folds: int = 0, fold: int = 0) -> DataFrame:
    """Random holdout by hashing (user_id, movie_id).

    ``test_fraction`` and ``validation_fraction`` are shares of all ratings. With ``folds > 1`` the
    test set is instead hash fold ``fold`` of ``folds`` (the folds partition the ratings), and
    validation is ``validation_fraction`` of all ratings carved from the other folds."""
    test_draw = unit_hash(seed, USER_ID, MOVIE_ID)
    validation_draw = unit_hash(seed + 1, USER_ID, MOVIE_ID)
    if folds > 1:
        is_test = F.floor(test_draw * folds) == fold
        test_share = 1.0 / folds
    else:
        is_test = test_draw < test_fraction
        test_share = test_fraction
    validation_share = min(1.0, validation_fraction / (1.0 - test_share))
    return ratings.withColumn(
        SPLIT,
        F.when(is_test, TEST).when(validation_draw < validation_share, VALIDATION).otherwise(TRAIN))


def chronological_split(ratings: DataFrame, test_fraction: float,
                        validation_fraction: float) -> DataFrame:
    """Per user, the latest ratings are the test set and the ones just before them validation.

    A user with n ratings gives floor(n * fraction) to each held-out set, so users with very few
    ratings stay wholly in training. Same-day ratings are ordered by movie_id to stay
    deterministic."""
    by_user = Window.partitionBy(USER_ID)
    ordered = by_user.orderBy(F.col(RATED_ON).asc_nulls_first(), F.col(MOVIE_ID))
    n = F.count(F.lit(1)).over(by_user)
    position = F.row_number().over(ordered)
    n_test = F.floor(n * test_fraction)
    n_validation = F.floor(n * validation_fraction)
    return ratings.withColumn(
        SPLIT,
        F.when(position > n - n_test, TEST)
        .when(position > n - n_test - n_validation, VALIDATION)
        .otherwise(TRAIN))


def probe_split(ratings: DataFrame, probe: DataFrame, validation_fraction: float,
                seed: int) -> DataFrame:
    """The Netflix Prize protocol: the probe pairs are the test set and never trained on;
    ``validation_fraction`` of the other ratings (by hash) is validation."""
    probe_keys = probe.select(USER_ID, MOVIE_ID).distinct().withColumn("_probe", F.lit(True))
    validation_draw = unit_hash(seed + 1, USER_ID, MOVIE_ID)
    return (ratings.join(probe_keys, [USER_ID, MOVIE_ID], "left")
            .withColumn(SPLIT, F.when(F.col("_probe"), TEST)
                        .when(validation_draw < validation_fraction, VALIDATION)
                        .otherwise(TRAIN))
            .drop("_probe"))


def part(split_ratings: DataFrame, *names: str) -> DataFrame:
    """The rows of one or more parts of a split."""
    return split_ratings.where(F.col(SPLIT).isin(*names))
