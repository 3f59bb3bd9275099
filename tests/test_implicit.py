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


def test_movie_weights_equal_a_ridge_per_movie_by_hand(spark):
    rng = np.random.default_rng(3)
    frame = _ratings(rng)
    movie_ids = np.arange(1, 53, dtype=np.int64)  # 51 and 52: nobody rated them
    y = rng.normal(0, 0.5, (len(movie_ids), 3)).astype(np.float32)
    ridge = 2.0
    # Rows in a scrambled order, in two tasks of several Arrow batches of 1,000 rows, summed
    # in chunks of about 2,500: users' rows straddle batches and chunks, and the sums of two
    # tasks are added.
    shuffled = frame.sample(frac=1.0, random_state=1)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "1000")
    try:
        got = implicit.movie_weights(spark.createDataFrame(shuffled), movie_ids, y, ridge,
                                     parallelism=2, chunk_rows=2500)
    finally:
        spark.conf.set(key, before)
    assert len(frame) > 12_000
    z = {}
    for user, mine in frame.groupby("user_id"):
        pos = np.searchsorted(movie_ids, mine["movie_id"].to_numpy())
        z[user] = y[pos].astype(np.float64).sum(axis=0) / np.sqrt(len(mine))
    for m, movie in enumerate(movie_ids):
        raters = frame[frame["movie_id"] == movie]
        if raters.empty:
            assert not got[m].any()
            continue
        design = np.array([z[u] for u in raters["user_id"]])
        expected = np.linalg.solve(design.T @ design + ridge * np.eye(3),
                                   design.T @ raters["residual"].to_numpy())
        assert got[m] == pytest.approx(expected, rel=1e-4, abs=1e-5)


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
