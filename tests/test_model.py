"""Splits, baselines, residual ALS prediction and the Spark-free factor model on small frames."""

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F

from prizeflow import als, baselines, splits
from prizeflow.als import AlsSettings
from prizeflow.grid import GridPoint

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def ratings(spark):
    """4,000 ratings: 200 users x 20 movies, ratings from a fixed pseudo-random rule."""
    rows = []
    for user in range(1, 201):
        for movie in range(1, 21):
            score = 1 + ((user * 7 + movie * 13) % 5)
            day = dt.date(2005, 1, 1) + dt.timedelta(days=(user * movie) % 300)
            rows.append((user, movie, float(score), day))
    return spark.createDataFrame(rows, "user_id int, movie_id int, rating float, rated_on date")


def _keys(df, name):
    return {(r.user_id, r.movie_id) for r in
            df.where(F.col("split") == name).select("user_id", "movie_id").collect()}


def test_hash_split_is_deterministic_disjoint_and_near_its_fractions(ratings):
    first = splits.hash_split(ratings, 0.1, 0.1, seed=7)
    again = splits.hash_split(ratings.repartition(5), 0.1, 0.1, seed=7)
    parts = {name: _keys(first, name) for name in ("train", "validation", "test")}
    assert parts == {name: _keys(again, name) for name in parts}
    assert sum(len(p) for p in parts.values()) == 4000
    assert len(parts["train"] | parts["validation"] | parts["test"]) == 4000
    assert 300 < len(parts["test"]) < 500 and 300 < len(parts["validation"]) < 500
    other_seed = _keys(splits.hash_split(ratings, 0.1, 0.1, seed=8), "test")
    assert other_seed != parts["test"]


def test_hash_folds_partition_the_ratings(ratings):
    folds = [_keys(splits.hash_split(ratings, 0.1, 0.1, 3, folds=5, fold=k), "test")
             for k in range(5)]
    assert sum(len(f) for f in folds) == 4000
    assert len(set().union(*folds)) == 4000
    assert all(650 < len(f) < 950 for f in folds)


def test_probe_pairs_are_the_test_set_and_never_trained_on(spark, ratings):
    probe = spark.createDataFrame([(1, 1), (1, 2), (50, 7), (50, 7), (999, 3)],
                                  "user_id int, movie_id int")
    split = splits.probe_split(ratings, probe, 0.1, seed=1)
    assert _keys(split, "test") == {(1, 1), (1, 2), (50, 7)}  # (999, 3) was never rated
    trained = _keys(split, "train") | _keys(split, "validation")
    assert not trained & {(1, 1), (1, 2), (50, 7)}
    assert split.count() == 4000


def test_chronological_split_holds_out_each_users_latest_ratings(ratings):
    split = splits.chronological_split(ratings, 0.1, 0.1).collect()
    by_user = {}
    for row in split:
        by_user.setdefault(row.user_id, []).append(row)
    for rows in by_user.values():
        rows.sort(key=lambda r: (r.rated_on, r.movie_id))
        assert [r.split for r in rows] == ["train"] * 16 + ["validation"] * 2 + ["test"] * 2


def _reference_biases(rows, reg, passes):
    """Alternating ridge passes by hand, in plain Python."""
    mu = sum(r for _, _, r in rows) / len(rows)
    b_user: dict = {}
    b_movie: dict = {}
    for _ in range(passes):
        sums, counts = {}, {}
        for u, m, r in rows:
            sums[m] = sums.get(m, 0.0) + r - mu - b_user.get(u, 0.0)
            counts[m] = counts.get(m, 0) + 1
        b_movie = {m: sums[m] / (reg + counts[m]) for m in sums}
        sums, counts = {}, {}
        for u, m, r in rows:
            sums[u] = sums.get(u, 0.0) + r - mu - b_movie[m]
            counts[u] = counts.get(u, 0) + 1
        b_user = {u: sums[u] / (reg + counts[u]) for u in sums}
    return mu, b_user, b_movie


TINY = [(1, 10, 5.0), (1, 11, 3.0), (2, 10, 4.0), (3, 11, 1.0), (3, 12, 2.0), (2, 12, 5.0)]


@pytest.mark.parametrize("passes", [1, 3])
def test_biases_equal_a_hand_computation(spark, passes):
    frame = spark.createDataFrame(TINY, "user_id int, movie_id int, rating float")
    fitted = baselines.fit_biases(frame, reg=1.5, passes=passes)
    mu, b_user, b_movie = _reference_biases(TINY, 1.5, passes)
    assert fitted.mean == pytest.approx(mu)
    assert {r.user_id: r.b_user for r in fitted.users.collect()} == pytest.approx(b_user)
    assert {r.movie_id: r.b_movie for r in fitted.movies.collect()} == pytest.approx(b_movie)
    if passes == 1:  # one pass worked out on paper: mu = 20/6, b_10 = (5 + 4 - 2 mu) / 3.5
        assert b_movie[10] == pytest.approx((9 - 2 * 20 / 6) / 3.5)


@pytest.fixture(scope="module")
def residual_model(ratings):
    train = splits.part(splits.hash_split(ratings, 0.1, 0.0, seed=1), "train")
    biases = baselines.fit_biases(train, 2.0, 2)
    data = baselines.residuals(train, biases).cache()
    point = GridPoint("residual", 3, 0.1, 5, 2.0)
    return als.fit(point, data, AlsSettings(1, 2, 10), biases.mean, biases, 1.0, 5.0)


def test_cold_start_rows_get_the_baseline_and_nothing_is_dropped(spark, residual_model):
    pairs = spark.createDataFrame([(1, 1), (999, 1), (1, 999), (999, 998)],
                                  "user_id int, movie_id int")
    out = {(r.user_id, r.movie_id): r.prediction
           for r in als.predict(residual_model, pairs).collect()}
    assert len(out) == 4 and all(np.isfinite(v) for v in out.values())
    biases = residual_model.biases
    mu = biases.mean
    b_user = {r.user_id: r.b_user for r in biases.users.collect()}
    b_movie = {r.movie_id: r.b_movie for r in biases.movies.collect()}
    assert out[(999, 1)] == pytest.approx(min(5, max(1, mu + b_movie[1])))
    assert out[(1, 999)] == pytest.approx(min(5, max(1, mu + b_user[1])))
    assert out[(999, 998)] == pytest.approx(mu)
    assert out[(1, 1)] != pytest.approx(mu + b_user[1] + b_movie[1])  # factors do contribute


def test_factor_model_predicts_like_spark(spark, ratings, residual_model):
    pairs = ratings.select("user_id", "movie_id").union(
        spark.createDataFrame([(999, 1), (1, 999), (999, 998)], "user_id int, movie_id int"))
    spark_rows = als.predict(residual_model, pairs).collect()
    factor_model = als.export_factors(residual_model)
    local = factor_model.predict([r.user_id for r in spark_rows], [r.movie_id for r in spark_rows])
    assert np.max(np.abs(local - np.array([r.prediction for r in spark_rows]))) < 1e-4
    assert local.min() >= 1.0 and local.max() <= 5.0


def test_plain_als_falls_back_to_the_global_mean(spark, ratings):
    train = ratings.select("user_id", "movie_id", "rating")
    point = GridPoint("plain", 3, 0.1, 3, None)
    model = als.fit(point, train, AlsSettings(1, 2, 10), 3.0, None, 1.0, 5.0)
    pairs = spark.createDataFrame([(999, 1), (1, 1)], "user_id int, movie_id int")
    out = {r.user_id: r.prediction for r in als.predict(model, pairs).collect()}
    assert out[999] == pytest.approx(3.0)
    assert 1.0 <= out[1] <= 5.0
