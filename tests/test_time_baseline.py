"""The time-aware baseline in numpy (prizeflow.time_baseline, FactorModel with time effects):
equal to a hand computation, saved and loaded, the history's own days in its residuals, top-N
at the latest day, and dates through the pyfunc's frame."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from test_factors import MOVIES, USERS, _history, _model, _neighbour_table

from prizeflow.factors import FactorModel, Requests
from prizeflow.pyfunc import HISTORY_DATES, HISTORY_MOVIES, HISTORY_RATINGS, predict_frame
from prizeflow.time_baseline import BETA, TimeEffects

FIRST, LAST, BINS = 12000, 12399, 4  # bins of 100 days


def _with_time(model: FactorModel, rng) -> FactorModel:
    user_time = np.column_stack([rng.uniform(FIRST, LAST, len(USERS)),
                                 rng.normal(0, 0.05, len(USERS))])
    bins = rng.normal(0, 0.4, (len(MOVIES), BINS))
    return replace(model, time=TimeEffects(FIRST, LAST, bins), user_time=user_time)


def _hand_baseline(model: FactorModel, user: int, movie: int, day: float | None) -> float:
    day = LAST if day is None or np.isnan(day) else day
    value = model.mean
    if user in USERS:
        u = int(np.searchsorted(USERS, user))
        mean_day, alpha = model.user_time[u]
        gap = day - mean_day
        value += model.user_bias[u] + alpha * np.sign(gap) * abs(gap) ** BETA
    if movie in MOVIES:
        m = int(np.searchsorted(MOVIES, movie))
        value += model.movie_bias[m] + model.time.movie_bins[m, min(max(int((day - FIRST) // 100), 0),
                                                                    BINS - 1)]
    return value


def test_time_baseline_equals_a_hand_computation():
    rng = np.random.default_rng(21)
    model = _with_time(_model(rng), rng)
    users = np.array([1, 1, 1, 1, 7, 10**6, 3])
    movies = np.array([101, 101, 101, 101, 130, 105, 10**6])
    days = np.array([FIRST, FIRST + 250, LAST + 500, np.nan, FIRST - 40, FIRST, LAST])
    got = model.baseline(users, movies, days)
    for value, user, movie, day in zip(got, users, movies, days):
        assert value == pytest.approx(_hand_baseline(model, user, movie, day), abs=1e-12)
    assert got[0] != pytest.approx(got[1])  # the bin and the drift move with the day
    assert model.baseline(users, movies) == pytest.approx(
        model.baseline(users, movies, np.full(len(users), np.nan)))
    # A model without time effects ignores the days.
    static = replace(model, time=None, user_time=None)
    assert static.baseline(users, movies, days) == pytest.approx(static.baseline(users, movies))


def test_saved_time_model_loads_and_predicts_the_same(tmp_path):
    rng = np.random.default_rng(22)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = FactorModel.load(path)
    assert (loaded.time.first_day, loaded.time.last_day) == (FIRST, LAST)
    users, movies = USERS[:10], MOVIES[:10]
    days = np.linspace(FIRST, LAST, 10)
    history = tuple(np.array(c) for c in zip(*_history(rng)))
    assert loaded.predict(users, movies, history, days) == pytest.approx(
        model.predict(users, movies, history, days), abs=1e-12)
    assert loaded.nbytes() == model.nbytes()


def test_history_residuals_use_each_ratings_own_day():
    """The neighbour term averages rating - baseline on the day of each history rating."""
    rng = np.random.default_rng(23)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    history = _history(rng)
    h_users, h_movies, h_ratings = (np.array(c) for c in zip(*history))
    h_days = rng.integers(FIRST, LAST + 1, len(h_users)).astype(float)
    users, movies = USERS[:20], MOVIES[rng.integers(0, len(MOVIES), 20)]
    dated = model.parts(Requests.by_user(users, movies, (h_users, h_movies, h_ratings, h_days)))
    undated = model.parts(Requests.by_user(users, movies, (h_users, h_movies, h_ratings)))
    assert not np.allclose(dated["neighbour_term"], undated["neighbour_term"])
    # By hand: a model without time effects, given ratings moved by the difference of the two
    # baselines on each rating's day, sees the same residuals, so the same term.
    static = replace(model, time=None, user_time=None)
    shift = np.array([_hand_baseline(model, u, m, d)
                      - static.baseline(np.array([u]), np.array([m]))[0]
                      for u, m, d in zip(h_users, h_movies, h_days)])
    shifted = static.parts(Requests.by_user(users, movies, (h_users, h_movies,
                                                            h_ratings - shift)))
    assert dated["neighbour_term"] == pytest.approx(shifted["neighbour_term"], abs=1e-9)


def test_top_n_with_time_effects_ranks_by_the_rule_at_the_latest_day():
    rng = np.random.default_rng(24)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    # Bin biases large enough to reorder the lists.
    model = replace(model, time=replace(model.time, movie_bins=model.time.movie_bins * 4))
    history = _history(rng)
    asked = USERS[:10]
    owner_of = {int(u): i for i, u in enumerate(asked)}
    h = [(owner_of[u], m, r) for u, m, r in history if u in owner_of]
    h_owner, h_movies, h_ratings = (np.array(c) for c in zip(*h))
    h_days = np.full(len(h_owner), float(FIRST + 30))
    owner, ranks, movies, scores = model.top_n(asked, h_owner, h_movies, h_ratings, 3, h_days)
    for i, user in enumerate(asked):
        mine = [(u, m, r) for u, m, r in history if u == user]
        seen = {m for _, m, _ in mine}
        others = np.array([m for m in MOVIES if m not in seen])
        hist = tuple(np.array(c) for c in zip(*mine)) + (np.full(len(mine), float(FIRST + 30)),)
        raw = model.combine(model.parts(Requests.by_user(np.full(len(others), user), others,
                                                         hist)))
        best = [others[j] for j in np.lexsort((others, -raw))[:3]]
        assert list(movies[owner == i]) == best
        assert scores[owner == i] == pytest.approx(np.clip(np.sort(raw)[::-1][:3], 1, 5))


def test_pyfunc_takes_the_rows_and_the_historys_dates():
    rng = np.random.default_rng(25)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    history = [(u, m, r) for u, m, r in _history(rng) if u in (1, 2)]
    epoch = dt.date(1970, 1, 1)
    h_days = {(u, m): FIRST + (7 * u + m) % 400 for u, m, _ in history}
    users = np.array([1, 2, 2], dtype=np.int64)
    movies = np.array([MOVIES[0], MOVIES[1], MOVIES[2]], dtype=np.int64)
    days = [FIRST + 10, LAST, None]
    mine = {u: [(m, r) for uu, m, r in history if uu == u] for u in (1, 2)}
    frame = pd.DataFrame({
        "user_id": users, "movie_id": movies,
        "rated_on": [None if d is None else (epoch + dt.timedelta(days=d)).isoformat()
                     for d in days],
        HISTORY_MOVIES: [[m for m, _ in mine[u]] for u in users],
        HISTORY_RATINGS: [[r for _, r in mine[u]] for u in users],
        HISTORY_DATES: [[epoch + dt.timedelta(days=h_days[(u, m)]) for m, _ in mine[u]]
                        for u in users]})
    h = tuple(np.array(c) for c in zip(*history)) + (
        np.array([h_days[(u, m)] for u, m, _ in history], dtype=float),)
    expected = model.predict(users, movies, h, np.array(
        [np.nan if d is None else d for d in days], dtype=float))
    assert predict_frame(model, frame) == pytest.approx(expected, abs=1e-12)
    # Without any date every row and rating is at the latest day.
    plain = frame.drop(columns=["rated_on", HISTORY_DATES])
    assert predict_frame(model, plain) == pytest.approx(
        model.predict(users, movies, h[:3]), abs=1e-12)
    assert not np.allclose(predict_frame(model, plain), expected)
    # Dates without a history: the no-history weights, on each row's day.
    no_history = frame[["user_id", "movie_id", "rated_on"]]
    assert predict_frame(model, no_history) == pytest.approx(model.predict(
        users, movies, days=np.array([np.nan if d is None else d for d in days], dtype=float)),
        abs=1e-12)
    assert not np.allclose(predict_frame(model, no_history),
                           predict_frame(model, no_history[["user_id", "movie_id"]]))
    # A zoned time counts on its UTC date; day numbers are refused (pandas would read them as
    # nanoseconds).
    zoned = no_history.copy()
    zoned["rated_on"] = [dt.datetime(2003, 1, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
                         "2003-01-01T20:00:00", dt.date(2003, 1, 1)]
    assert predict_frame(model, zoned) == pytest.approx(model.predict(
        users, movies, days=np.full(3, float((dt.date(2003, 1, 1) - epoch).days))), abs=1e-12)
    with pytest.raises(ValueError, match="not numbers"):
        predict_frame(model, no_history.assign(rated_on=[FIRST, FIRST, FIRST]))
    broken = frame.copy()
    broken.at[0, HISTORY_DATES] = broken.at[0, HISTORY_DATES][:-1]
    with pytest.raises(ValueError, match=f"row 0: {HISTORY_DATES}"):
        predict_frame(model, broken)


def test_the_shortlist_orders_movies_as_the_rule_at_the_latest_day():
    """top_n's one matrix product: per user, the rule without the neighbour term at the latest
    day, less a constant (the user's own terms)."""
    rng = np.random.default_rng(26)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    users = USERS[:8]
    scores = model.shortlist_scores(users, None)
    for row, user in zip(scores, users):
        parts = model.parts(Requests.by_user(np.full(len(MOVIES), user), MOVIES))
        raw = model.rule(with_history=True).without("neighbour_term").raw(
            {**parts, "neighbour_term": np.zeros(len(MOVIES))})
        assert row - raw == pytest.approx(np.full(len(MOVIES), (row - raw)[0]), abs=1e-5)


def test_a_time_model_takes_its_users_drift_with_its_users():
    """with_users (what a scoring task does with its users' rows) needs the users' mean day and
    alpha for a model with time effects, and keeps them with their user when it sorts."""
    rng = np.random.default_rng(27)
    model = _with_time(_model(rng), rng)
    movie_side = model.movie_side()
    with pytest.raises(ValueError, match="needs each user's mean day and alpha"):
        movie_side.with_users(USERS[:3], model.user_bias[:3], model.user_factors[:3],
                              model.user_has_factors[:3])
    order = np.array([5, 0, 9, 2])  # not sorted by id
    local = movie_side.with_users(USERS[order], model.user_bias[order], model.user_factors[order],
                                  model.user_has_factors[order], model.user_time[order])
    days = np.array([FIRST + 5.0, LAST, np.nan, FIRST + 200.0])
    assert local.baseline(USERS[order], MOVIES[:4], days) == pytest.approx(
        model.baseline(USERS[order], MOVIES[:4], days), abs=1e-12)
    with pytest.raises(ValueError, match="user_time has 2 rows for 4 users"):
        movie_side.with_users(USERS[order], model.user_bias[order], model.user_factors[order],
                              model.user_has_factors[order], model.user_time[:2])


def test_the_day_term_is_the_shrunk_mean_residual_of_that_users_ratings_that_day(tmp_path):
    rng = np.random.default_rng(27)
    _, arrays = _neighbour_table(rng)
    model = _with_time(_model(rng, arrays), rng)
    nb = model.neighbourhood
    model = replace(model, time=replace(model.time, day_reg=2.0), neighbourhood=replace(
        nb, weights=np.append(nb.weights, 0.7)))
    assert model.has_day_term and model.rule().parts[-1] == "day_term"
    # User 1 rated three movies on day FIRST + 5 and one on FIRST + 9; user 3 one on FIRST + 5;
    # one of user 1's ratings has no date (it counts on no day).
    h_users = np.array([1, 1, 1, 1, 3, 1])
    h_movies = np.array([MOVIES[0], MOVIES[1], MOVIES[2], MOVIES[3], MOVIES[0], MOVIES[4]])
    h_ratings = np.array([5.0, 5.0, 4.0, 3.0, 2.0, 5.0])
    h_days = np.array([FIRST + 5, FIRST + 5, FIRST + 5, FIRST + 9, FIRST + 5, np.nan])
    users = np.array([1, 1, 1, 3, 7])
    movies = np.array([MOVIES[5], MOVIES[5], MOVIES[5], MOVIES[5], MOVIES[5]])
    days = np.array([FIRST + 5, FIRST + 9, np.nan, FIRST + 5, FIRST + 5])
    history = (h_users, h_movies, h_ratings, h_days)
    parts = model.parts(Requests.by_user(users, movies, history, days))
    residual = h_ratings - model.baseline(h_users, h_movies, h_days)
    expected = [residual[:3].sum() / (2.0 + 3), residual[3] / (2.0 + 1), 0.0,
                residual[4] / (2.0 + 1), 0.0]  # no date, or no history that day: none
    assert parts["day_term"] == pytest.approx(expected, abs=1e-12)
    assert abs(expected[0]) > 0.05
    # A movie user 1 rated that day without a known rating (a qualifying pair) is no rating.
    hidden = tuple(np.append(a, v) for a, v in zip(history, (1, MOVIES[6], np.nan, FIRST + 5)))
    assert model.parts(Requests.by_user(users, movies, hidden, days))["day_term"] == (
        pytest.approx(expected, abs=1e-12))
    assert parts["baseline"] == pytest.approx(model.baseline(users, movies, days), abs=1e-12)
    # The blend weighs it: the prediction moves by its weight times the term.
    without_term = replace(model, neighbourhood=replace(
        model.neighbourhood, weights=np.append(nb.weights, 0.0)))
    assert (model.predict(users, movies, history, days)
            - without_term.predict(users, movies, history, days)) == pytest.approx(
        np.clip(0.7 * np.array(expected), -5, 5), abs=1e-9)
    # Without the history's days there is no day term; saved and loaded, day_reg stays.
    undated = model.parts(Requests.by_user(users, movies, history[:3], days))
    assert not undated["day_term"].any()
    path = tmp_path / "day.npz"
    model.save(path)
    loaded = FactorModel.load(path)
    assert loaded.time.day_reg == 2.0 and loaded.rule() == model.rule()
