"""The item-item neighbourhood and the blend on tiny frames: Spark against plain Python, and the
numpy model against Spark."""

import math
from dataclasses import replace

import numpy as np
import pytest
from pyspark.sql import functions as F

from prizeflow import blend, neighbours
from prizeflow.factors import FactorModel, top_n

SHRINK, DAMPING = 2.0, 1.5


def _residual_rows():
    """7 users x 6 movies with a few holes; residuals from a fixed pseudo-random rule."""
    rows = []
    for user in range(1, 8):
        for movie in range(1, 7):
            if (user * 3 + movie) % 5 == 0:
                continue  # not rated
            rows.append((user, movie, ((user * 7 + movie * 11) % 9 - 4) / 2.0))
    return rows


@pytest.fixture(scope="module")
def residuals(spark):
    return spark.createDataFrame(_residual_rows(), "user_id int, movie_id int, residual double")


def _hand_similarities(rows, shrink):
    by_user = {}
    for user, movie, value in rows:
        by_user.setdefault(user, {})[movie] = value
    movies = sorted({m for _, m, _ in rows})
    out = {}
    for a in movies:
        for b in movies:
            if a == b:
                continue
            common = [r for r in by_user.values() if a in r and b in r]
            if not common:
                continue
            dot = sum(r[a] * r[b] for r in common)
            norm = math.sqrt(sum(r[a] ** 2 for r in common) * sum(r[b] ** 2 for r in common))
            similarity = dot / (norm + 1e-9) * len(common) / (len(common) + shrink)
            if similarity > 0:
                out[(a, b)] = similarity
    return out, by_user


def test_similarities_equal_a_hand_computation(residuals):
    expected, _ = _hand_similarities(_residual_rows(), SHRINK)
    got = {(r.movie_id, r.other_id): r.similarity
           for r in neighbours.similarities(residuals, SHRINK).collect()}
    assert len(expected) > 5  # the fixture has positive and non-positive pairs
    assert got == pytest.approx(expected)
    kept = neighbours.similarities(residuals, SHRINK, keep=2).collect()
    for movie in {m for m, _ in expected}:
        best = [o for _, o in sorted((-s, o) for (m, o), s in expected.items() if m == movie)[:2]]
        assert [r.other_id for r in sorted(kept, key=lambda r: (-r.similarity, r.other_id))
                if r.movie_id == movie] == best


def test_cap_per_user_keeps_a_fixed_sample(residuals):
    capped = neighbours.cap_per_user(residuals, 2)
    again = neighbours.cap_per_user(residuals.repartition(3), 2)
    rows = {(r.user_id, r.movie_id) for r in capped.collect()}
    assert rows == {(r.user_id, r.movie_id) for r in again.collect()}
    per_user = capped.groupBy("user_id").count().collect()
    assert len(per_user) == 7 and all(r["count"] == 2 for r in per_user)
    assert neighbours.cap_per_user(residuals, None) is residuals


def _hand_term(by_user, similar, user, movie, k, damping):
    rated = by_user.get(user, {})
    candidates = sorted(((-similar[(movie, other)], other) for other in rated
                         if (movie, other) in similar))[:k]
    if not candidates:
        return 0.0
    weights = [-s for s, _ in candidates]
    values = [rated[o] for _, o in candidates]
    return sum(w * v for w, v in zip(weights, values)) / (damping + sum(weights))


def test_neighbour_term_equals_hand_computation_and_the_numpy_model(spark, residuals):
    similar, by_user = _hand_similarities(_residual_rows(), SHRINK)
    table = neighbours.similarities(residuals, SHRINK)
    queries = [(u, m) for u in range(1, 8) for m in range(1, 7) if m not in by_user[u]]
    queries += [(99, 1), (1, 99)]  # an unknown user, an unknown movie: term 0, row kept
    pairs = spark.createDataFrame(queries, "user_id int, movie_id int")
    scored = neighbours.with_term(pairs, residuals, table, k=2, damping=DAMPING)
    got = {(r.user_id, r.movie_id): r.neighbour_term for r in scored.collect()}
    assert len(got) == len(queries)
    expected = {q: _hand_term(by_user, similar, *q, k=2, damping=DAMPING) for q in queries}
    assert got == pytest.approx(expected)
    assert any(v != 0 for v in got.values()) and got[(99, 1)] == got[(1, 99)] == 0.0

    exported = neighbours.export(residuals, table, 2, DAMPING, [0.0, 1.0, 1.0, 1.0])
    users = np.array([q[0] for q in queries])
    movies = np.array([q[1] for q in queries])
    assert exported.term(users, movies) == pytest.approx([expected[q] for q in queries])


def test_blend_weights_recover_a_linear_rule(spark):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, 3))
    rating = 0.5 + features @ np.array([0.9, 1.1, 2.0])
    frame = spark.createDataFrame(
        [tuple(map(float, row)) + (float(r),) for row, r in zip(features, rating)],
        "baseline double, factor_term double, neighbour_term double, rating double")
    weights = blend.fit_weights(frame)
    assert weights == pytest.approx([0.5, 0.9, 1.1, 2.0], abs=1e-3)
    clipped = frame.select(blend.prediction(weights, 1.0, 5.0).alias("p")).agg(
        F.min("p"), F.max("p")).first()
    assert clipped[0] >= 1.0 and clipped[1] <= 5.0
    with pytest.raises(ValueError, match="empty"):
        blend.fit_weights(frame.where(F.lit(False)))


def test_factor_model_with_neighbourhood_saves_loads_and_blends(spark, residuals, tmp_path):
    table = neighbours.similarities(residuals, SHRINK)
    weights = [0.1, 0.9, 1.2, 2.0]
    nb = neighbours.export(residuals, table, 3, DAMPING, weights)
    ids = np.arange(1, 8, dtype=np.int64)
    movie_ids = np.arange(1, 7, dtype=np.int64)
    rng = np.random.default_rng(0)
    model = FactorModel("residual", 3.5, 1.0, 5.0, ids, rng.normal(0, 0.3, 7),
                        rng.normal(0, 0.3, (7, 2)).astype(np.float32), np.ones(7, bool),
                        movie_ids, rng.normal(0, 0.3, 6), rng.normal(0, 0.3, (6, 2)).astype(
                            np.float32), np.ones(6, bool), neighbourhood=nb)
    model.save(tmp_path / "m.npz")
    loaded = FactorModel.load(tmp_path / "m.npz")
    users, movies = np.repeat(ids, 6), np.tile(movie_ids, 7)
    assert loaded.neighbourhood is not None and loaded.neighbourhood.k == 3
    assert np.array_equal(loaded.predict(users, movies), model.predict(users, movies))
    plain = replace(model, neighbourhood=None)
    base = plain.predict(users, movies)  # baseline + factor term (nothing clipped here)
    term = nb.term(users, movies)
    baseline = (3.5 + model.user_bias[users - 1] + model.movie_bias[movies - 1])
    expected = np.clip(weights[0] + weights[1] * baseline + weights[2] * (base - baseline)
                       + weights[3] * term, 1.0, 5.0)
    assert model.predict(users, movies) == pytest.approx(expected)
    assert np.any(term != 0)

    # Recommendations rank by the blended score: on 6 movies the shortlist is the whole catalogue,
    # so the top 2 must be the 2 best unrated movies by the unclipped blend.
    rated = [[1, 2], [], [3, 4, 5]]
    got_users, ranks, got_movies, scores = top_n(model, np.array([1, 2, 3]), rated, 2)
    for user, seen in zip([1, 2, 3], rated):
        others = [m for m in movie_ids if m not in seen]
        raw = model.raw_predict(np.full(len(others), user), np.array(others))
        expected_movies = [others[i] for i in np.argsort(-raw, kind="stable")[:2]]
        assert list(got_movies[got_users == user]) == expected_movies
        assert list(ranks[got_users == user]) == [1, 2]
