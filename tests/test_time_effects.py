"""The time-aware baseline fitted in Spark (prizeflow.time_effects) equals the same alternating
ridge passes in numpy, and Spark's scoring of it equals the numpy model's
(:meth:`prizeflow.factors.FactorModel.baseline` with :class:`TimeEffects`)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from prizeflow import time_effects
from prizeflow.columns import DAY, MOVIE_ID, RATED_ON, RATING, USER_ID
from prizeflow.factors import FactorModel
from prizeflow.time_baseline import BETA, TimeEffects

pytestmark = pytest.mark.spark

BINS, REG, REG_BIN, REG_ALPHA, PASSES = 4, 3.0, 10.0, 20.0, 3


def _numpy_fit(u, i, d, r, users, movies):
    """The passes of prizeflow.time_effects written out on arrays; ``d`` NaN: no date (the
    latest day)."""
    mu = r.mean()
    first, last = np.nanmin(d), np.nanmax(d)
    d = np.where(np.isnan(d), last, d)
    n_u = np.bincount(u, minlength=users)
    mean_day = np.bincount(u, d, users) / np.maximum(n_u, 1)
    gap = d - mean_day[u]
    dev = np.sign(gap) * np.abs(gap) ** BETA
    width = (last - first + 1) / BINS
    b = np.clip(np.floor((d - first) / width), 0, BINS - 1).astype(int)
    bu, au, bi = np.zeros(users), np.zeros(users), np.zeros(movies)
    bib = np.zeros((movies, BINS))
    for _ in range(PASSES):
        user_part = bu[u] + au[u] * dev
        bi = (np.bincount(i, r - mu - user_part - bib[i, b], movies)
              / (np.bincount(i, minlength=movies) + REG))
        flat = i * BINS + b
        bib = (np.bincount(flat, r - mu - user_part - bi[i], movies * BINS)
               / (np.bincount(flat, minlength=movies * BINS) + REG_BIN)).reshape(movies, BINS)
        res = r - mu - bi[i] - bib[i, b]
        s_d, s_dd = np.bincount(u, dev, users), np.bincount(u, dev * dev, users)
        s_r, s_rd = np.bincount(u, res, users), np.bincount(u, res * dev, users)
        a11, a12, a22 = n_u + REG, s_d, s_dd + REG_ALPHA
        det = a11 * a22 - a12 * a12
        bu, au = (a22 * s_r - a12 * s_rd) / det, (a11 * s_rd - a12 * s_r) / det
    seen_bins = set(zip(i.tolist(), b.tolist()))
    return mu, bu, au, mean_day, bi, bib, seen_bins


def test_time_biases_equal_a_numpy_fit_and_score_as_the_numpy_model(spark):
    rng = np.random.default_rng(11)
    users, movies, n = 30, 20, 1500
    u, i = rng.integers(0, users, n), rng.integers(0, movies, n)
    keys = np.unique(u * movies + i, return_index=True)[1]  # one rating per pair
    u, i = u[keys], i[keys]
    d = rng.integers(12000, 12400, len(u)).astype(float)
    d[:5] = np.nan  # ratings without a date: counted at the latest day
    r = np.clip(np.round(3 + 0.002 * (np.nan_to_num(d, nan=12200) - 12200)
                         + rng.normal(0, 1, len(u))), 1, 5)
    epoch = dt.date(1970, 1, 1)
    frame = spark.createDataFrame(
        [(int(a) + 1, int(b) + 1, float(c), None if np.isnan(e) else epoch + dt.timedelta(days=int(e)))
         for a, b, c, e in zip(u, i, r, d)],
        f"{USER_ID} int, {MOVIE_ID} int, {RATING} double, {RATED_ON} date")
    ratings = time_effects.with_day(frame).cache()

    fitted = time_effects.fit_time_biases(ratings, BINS, REG, REG_BIN, REG_ALPHA, PASSES)
    mu, bu, au, mean_day, bi, bib, seen_bins = _numpy_fit(u, i, d, r, users, movies)
    assert fitted.mean == pytest.approx(mu, abs=1e-12)
    assert (fitted.first_day, fitted.last_day) == (np.nanmin(d), np.nanmax(d))
    got_users = {row[USER_ID] - 1: row for row in fitted.users.collect()}
    assert set(got_users) == set(u.tolist())
    for user, row in got_users.items():
        assert row["b_user"] == pytest.approx(bu[user], abs=1e-9)
        assert row["alpha"] == pytest.approx(au[user], abs=1e-9)
        assert row["mean_day"] == pytest.approx(mean_day[user], abs=1e-9)
    got_movies = {row[MOVIE_ID] - 1: row["b_movie"] for row in fitted.movies.collect()}
    assert set(got_movies) == set(i.tolist())
    for movie, value in got_movies.items():
        assert value == pytest.approx(bi[movie], abs=1e-9)
    got_bins = {(row[MOVIE_ID] - 1, row[time_effects.BIN]): row["b_bin"]
                for row in fitted.movie_bins.collect()}
    assert set(got_bins) == seen_bins and len(got_bins) > movies
    for (movie, b), value in got_bins.items():
        assert value == pytest.approx(bib[movie, b], abs=1e-9)

    # The same tables as the numpy model's arrays; Spark's scoring must agree with it on a
    # known pair at several days, past the data, without a day, and unknown ids.
    ids = np.array(sorted(got_users)) + 1
    movie_ids = np.array(sorted(got_movies)) + 1
    movie_bins = np.zeros((len(movie_ids), BINS))
    for (movie, b), value in got_bins.items():
        movie_bins[int(np.searchsorted(movie_ids, movie + 1)), b] = value
    model = FactorModel(
        "residual", fitted.mean, 1.0, 5.0, ids, np.array([got_users[x - 1]["b_user"] for x in ids]),
        np.zeros((len(ids), 1), np.float32), np.zeros(len(ids), bool), movie_ids,
        np.array([got_movies[x - 1] for x in movie_ids]), np.zeros((len(movie_ids), 1), np.float32),
        np.zeros(len(movie_ids), bool), time=TimeEffects(fitted.first_day, fitted.last_day,
                                                          movie_bins),
        user_time=np.array([[got_users[x - 1]["mean_day"], got_users[x - 1]["alpha"]]
                            for x in ids]))
    user, movie = int(u[10]) + 1, int(i[10]) + 1
    first, last = int(np.nanmin(d)), int(np.nanmax(d))
    asked = [(user, movie, first), (user, movie, first + 150), (user, movie, last),
             (user, movie, last + 900), (user, movie, first - 30), (user, movie, None),
             (users + 5, movie, first), (user, movies + 5, last)]
    pairs = spark.createDataFrame(asked, f"{USER_ID} int, {MOVIE_ID} int, {DAY} int")
    scored = time_effects.with_time_baseline(pairs, fitted).collect()
    assert len(scored) == len(asked)
    days = np.array([np.nan if row[DAY] is None else row[DAY]
                     for row in scored], dtype=float)
    expected = model.baseline(np.array([row[USER_ID] for row in scored]),
                              np.array([row[MOVIE_ID] for row in scored]), days)
    assert [row["baseline"] for row in scored] == pytest.approx(expected, abs=1e-9)
    by_day = {row[DAY]: row["baseline"] for row in scored
              if (row[USER_ID], row[MOVIE_ID]) == (user, movie)}
    assert by_day[first] != pytest.approx(by_day[last])  # the day moves the baseline
    assert by_day[None] == pytest.approx(by_day[last])

    with pytest.raises(ValueError, match=r"already have columns \['b_user'\]"):
        time_effects.with_time_baseline(pairs.withColumn("b_user", pairs[USER_ID]), fitted)
