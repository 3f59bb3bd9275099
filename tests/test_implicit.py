"""The implicit-feedback term's two Spark steps against numpy done by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prizeflow import implicit

pytestmark = pytest.mark.spark


def _ratings(rng, users=400, movies=50):
    rows = []
    for user in range(1, users + 1):
        count = int(rng.integers(1, 90))
        for movie in rng.choice(np.arange(1, movies + 1), min(count, movies), replace=False):
            rows.append((user, int(movie), float(rng.normal(0, 1))))
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "residual"])


def _hand_weights(frame, movie_ids, y, ridge, unrated=None):
    """Per movie, the ridge of its raters' residuals on their z, each z over every movie in
    N(u): the user's rated movies and ``unrated`` movies (in z only)."""
    both = frame if unrated is None else pd.concat([frame, unrated])
    z = {}
    for user, mine in both.groupby("user_id"):
        pos = np.searchsorted(movie_ids, mine["movie_id"].to_numpy())
        z[user] = y[pos].astype(np.float64).sum(axis=0) / np.sqrt(len(mine))
    out = np.zeros((len(movie_ids), y.shape[1]))
    for m, movie in enumerate(movie_ids):
        raters = frame[frame["movie_id"] == movie]
        if not raters.empty:
            design = np.array([z[u] for u in raters["user_id"]])
            out[m] = np.linalg.solve(design.T @ design + ridge * np.eye(y.shape[1]),
                                     design.T @ raters["residual"].to_numpy())
    return out


def _weights_in_spark(spark, frame, movie_ids, y, ridge, unrated=None):
    """implicit.movie_weights of ``frame``'s rows and the ``unrated`` pairs (residual null, as
    implicit.fit adds them)."""
    from pyspark.sql import functions as F

    # Rows in a scrambled order, in two tasks of several Arrow batches of 1,000 rows, summed
    # in chunks of about 2,500: users' rows straddle batches and chunks, and the sums of two
    # tasks are added.
    rows = spark.createDataFrame(frame.sample(frac=1.0, random_state=1))
    if unrated is not None:
        rows = rows.unionByName(spark.createDataFrame(unrated.sample(frac=1.0, random_state=2))
                                .withColumn("residual", F.lit(None).cast("double")))
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "1000")
    try:
        return implicit.movie_weights(rows, movie_ids, y, ridge, parallelism=2, chunk_rows=2500)
    finally:
        spark.conf.set(key, before)


def test_movie_weights_equal_a_ridge_per_movie_by_hand(spark):
    rng = np.random.default_rng(3)
    frame = _ratings(rng)
    movie_ids = np.arange(1, 53, dtype=np.int64)  # 51 and 52: nobody rated them
    y = rng.normal(0, 0.5, (len(movie_ids), 3)).astype(np.float32)
    got = _weights_in_spark(spark, frame, movie_ids, y, 2.0)
    assert len(frame) > 12_000
    expected = _hand_weights(frame, movie_ids, y, 2.0)
    assert not got[-2:].any()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_pairs_without_a_rating_count_in_z_only(spark):
    """A qualifying pair (rated, the rating hidden) joins its user's N(u), so it changes z, and
    gives its movie no regression row: residual null, as implicit.fit adds them."""
    rng = np.random.default_rng(3)
    frame = _ratings(rng)
    movie_ids = np.arange(1, 53, dtype=np.int64)
    y = rng.normal(0, 0.5, (len(movie_ids), 3)).astype(np.float32)
    # Each user's hidden pairs: up to 3 movies they did not rate; user 1's include 52, which
    # nobody rated.
    hidden = {(1, 52)}
    for user, mine in frame.groupby("user_id"):
        free = np.setdiff1d(movie_ids, mine["movie_id"].to_numpy())
        hidden |= {(int(user), int(m)) for m in rng.choice(free, min(3, len(free)), replace=False)}
    unrated = pd.DataFrame(sorted(hidden), columns=["user_id", "movie_id"])
    got = _weights_in_spark(spark, frame, movie_ids, y, 2.0, unrated)
    expected = _hand_weights(frame, movie_ids, y, 2.0, unrated)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert not got[-1].any()  # movie 52: only hidden pairs, so no regression
    without = _hand_weights(frame, movie_ids, y, 2.0)
    assert np.abs(expected - without).max() > 1e-3  # the hidden pairs moved z


def test_item_factors_follow_the_models_movies(spark):
    rng = np.random.default_rng(5)
    frame = _ratings(rng, users=120, movies=20)
    movie_ids = np.arange(0, 22, dtype=np.int64)  # 0 and 21: not in the data
    factors = implicit.item_factors(spark.createDataFrame(frame[["user_id", "movie_id"]]),
                                    movie_ids, rank=4, reg_param=0.1, alpha=10.0, max_iter=2,
                                    sample_users=1.0, seed=1, num_blocks=2)
    assert factors.shape == (22, 4) and factors.dtype == np.float32
    assert not factors[0].any() and not factors[21].any()
    assert np.abs(factors[1:21]).sum(axis=1).min() > 0
    half = implicit.item_factors(spark.createDataFrame(frame[["user_id", "movie_id"]]),
                                 movie_ids, rank=4, reg_param=0.1, alpha=10.0, max_iter=2,
                                 sample_users=0.5, seed=1, num_blocks=2)
    assert not np.allclose(half, factors)  # the sample changes what ALS saw


def test_fit_takes_the_unrated_pairs_into_both_steps(spark):
    """implicit.fit with qualifying-like pairs: the who-rated-what ALS sees them (its factors
    change) and the ridge counts them in z only (the weights are the hand ridge over the
    factors it learned)."""
    from prizeflow.config import ImplicitSettings

    rng = np.random.default_rng(5)
    frame = _ratings(rng, users=120, movies=40)
    movie_ids = np.arange(1, 41, dtype=np.int64)
    unrated = pd.DataFrame(
        [(int(u), int(m)) for u, mine in frame.groupby("user_id")
         for m in np.setdiff1d(movie_ids, mine["movie_id"].to_numpy())[:2]],
        columns=["user_id", "movie_id"])
    assert len(unrated) > 100
    conf = ImplicitSettings(rank=3, max_iter=3, ridge=2.0)

    def fit(hidden):
        return implicit.fit(spark.createDataFrame(frame[["user_id", "movie_id"]]),
                            spark.createDataFrame(frame), movie_ids, conf, seed=1,
                            num_blocks=2, parallelism=2,
                            unrated=None if hidden is None else spark.createDataFrame(hidden))

    with_hidden, without = fit(unrated), fit(None)
    assert np.abs(with_hidden.item_factors - without.item_factors).max() > 1e-3
    assert with_hidden.weights == pytest.approx(
        _hand_weights(frame, movie_ids, with_hidden.item_factors, 2.0, unrated),
        rel=1e-4, abs=1e-5)
