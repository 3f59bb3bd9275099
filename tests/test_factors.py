"""The model's one prediction rule in numpy (prizeflow.factors, prizeflow.pyfunc) against plain
Python, with no Spark: the neighbour term, the blend with and without a history, saving, the
top-N ranking and the pyfunc's request formats."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from prizeflow import factors, neighbours
from prizeflow.factors import FactorModel, ImplicitTerm, Neighbourhood, Requests
from prizeflow.pyfunc import HISTORY_MOVIES, HISTORY_RATINGS, predict_frame

MOVIES = np.arange(101, 131, dtype=np.int64)  # 30 movies, ids 101..130
USERS = np.arange(1, 41, dtype=np.int64)


def _to_arrays(table, movie_ids: np.ndarray, keep: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A neighbour table (a pandas frame of movie_id, other_id, similarity) as the model's padded
    arrays: positions in ``movie_ids`` (-1 pads), similarities, best first (ties: lower other
    position first)."""
    movie_pos = np.searchsorted(movie_ids, table["movie_id"].to_numpy(np.int64))
    other_pos = np.searchsorted(movie_ids, table["other_id"].to_numpy(np.int64))
    values = table["similarity"].to_numpy(np.float32)
    known = ((movie_pos < len(movie_ids)) & (other_pos < len(movie_ids)))
    known[known] &= (movie_ids[movie_pos[known]] == table["movie_id"].to_numpy(np.int64)[known])
    known[known] &= (movie_ids[other_pos[known]] == table["other_id"].to_numpy(np.int64)[known])
    movie_pos, other_pos, values = movie_pos[known], other_pos[known], values[known]
    order = np.lexsort((other_pos, -values, movie_pos))
    movie_pos, other_pos, values = movie_pos[order], other_pos[order], values[order]
    starts = np.searchsorted(movie_pos, movie_pos, side="left")
    within = np.arange(len(movie_pos)) - starts
    width = int(within.max()) + 1 if len(within) else 0
    if keep is not None:
        width = min(width, keep)
    near = np.full((len(movie_ids), width), -1, dtype=np.int32)
    similarity = np.zeros((len(movie_ids), width), dtype=np.float32)
    inside = within < width
    near[movie_pos[inside], within[inside]] = other_pos[inside]
    similarity[movie_pos[inside], within[inside]] = values[inside]
    return near, similarity


def _neighbour_table(rng, keep=8):
    """Random positive similarities with ties; (table as dict, padded arrays)."""
    table = {}
    for m in range(len(MOVIES)):
        count = int(rng.integers(0, keep + 3))
        others = rng.choice([o for o in range(len(MOVIES)) if o != m], count, replace=False)
        for other in others:
            table[(m, int(other))] = float(np.float32(np.round(rng.random(), 1) + 0.05))
    frame = pd.DataFrame([(MOVIES[m], MOVIES[o], s) for (m, o), s in table.items()],
                         columns=["movie_id", "other_id", "similarity"])
    arrays = _to_arrays(frame, MOVIES, keep)
    kept = {(m, int(o)): float(s) for m in range(len(MOVIES))
            for o, s in zip(*arrays_row(arrays, m))}
    return kept, arrays


def arrays_row(arrays, m):
    near, sims = arrays
    return near[m][near[m] >= 0], sims[m][near[m] >= 0]


def _model(rng, arrays=None, weights=(0.2, 0.95, 1.1, 1.7), without=(0.1, 0.97, 1.05)):
    model = FactorModel(
        "residual", 3.6, 1.0, 5.0, USERS, rng.normal(0, 0.3, len(USERS)),
        rng.normal(0, 0.3, (len(USERS), 3)).astype(np.float32),
        np.arange(len(USERS)) % 7 != 0, MOVIES, rng.normal(0, 0.3, len(MOVIES)),
        rng.normal(0, 0.3, (len(MOVIES), 3)).astype(np.float32), np.arange(len(MOVIES)) % 9 != 0)
    if arrays is not None:
        model.neighbourhood = Neighbourhood(4, 1.5, np.array(weights), np.array(without), *arrays)
    return model


def _with_implicit(model, rng, weight=0.8):
    """The model with an implicit term (random y and w, a row of zeros for one movie) and a
    fifth blend weight."""
    y = rng.normal(0, 0.5, (len(MOVIES), 4)).astype(np.float32)
    w = rng.normal(0, 0.5, (len(MOVIES), 4)).astype(np.float32)
    y[3] = 0.0
    nb = model.neighbourhood
    return replace(model, implicit=ImplicitTerm(y, w), neighbourhood=replace(
        nb, weights=np.append(nb.weights, weight)))


def _hand_implicit(model, history, user, movie):
    """z_u . w_i, z_u = |N(u)|^-1/2 sum of y over the movies u rated (by hand)."""
    if movie not in MOVIES:
        return 0.0
    rated = [mv for u, mv, _ in history if u == user and mv in MOVIES]
    if not rated:
        return 0.0
    y = model.implicit.item_factors.astype(np.float64)
    z = sum(y[int(np.searchsorted(MOVIES, mv))] for mv in rated) / math.sqrt(len(rated))
    return float(z @ model.implicit.weights[int(np.searchsorted(MOVIES, movie))])


def test_implicit_term_and_blend_equal_a_hand_computation():
    rng = np.random.default_rng(14)
    table, arrays = _neighbour_table(rng)
    model = _with_implicit(_model(rng, arrays), rng)
    history = _history(rng) + [(3, 99999, 4.0)]  # a movie the model does not know is no term
    users = np.concatenate([rng.choice(USERS, 300), [10**9]])
    movies = np.concatenate([rng.choice(np.append(MOVIES, 777), 300), [MOVIES[0]]])
    h = tuple(np.array(col) for col in zip(*history))
    parts = model.parts(Requests.by_user(users, movies, h))
    hand = [_hand_implicit(model, history, int(u), int(m)) for u, m in zip(users, movies)]
    assert parts["implicit_term"] == pytest.approx(hand, abs=1e-9)
    assert any(abs(v) > 0.1 for v in hand)
    w0, wb, wf, wn, wi = model.neighbourhood.weights
    expected = np.clip(w0 + wb * parts["baseline"] + wf * parts["factor_term"]
                       + wn * parts["neighbour_term"] + wi * np.array(hand), 1.0, 5.0)
    assert model.predict(users, movies, h) == pytest.approx(expected)
    # Without a history neither history term is known: the history-free weights apply.
    v0, vb, vf = model.neighbourhood.weights_without_history
    plain = model.parts(Requests.by_user(users, movies))
    assert "implicit_term" not in plain
    assert model.predict(users, movies) == pytest.approx(
        np.clip(v0 + vb * plain["baseline"] + vf * plain["factor_term"], 1.0, 5.0))


def _history(rng):
    rows = []
    for user in USERS:
        for movie in rng.choice(MOVIES, int(rng.integers(0, 12)), replace=False):
            rows.append((int(user), int(movie), float(rng.integers(1, 6))))
    return rows


def _hand_term(model, table, history, user, movie, k, damping):
    """The damped weighted mean of the user's residuals on the k most similar movies it rated."""
    if movie not in MOVIES:
        return 0.0
    m = int(np.searchsorted(MOVIES, movie))
    rated = {mv: r for u, mv, r in history if u == user}
    candidates = []
    for other_movie, rating in rated.items():
        o = int(np.searchsorted(MOVIES, other_movie))
        if (m, o) in table:
            residual = rating - model.baseline(np.array([user]), np.array([other_movie]))[0]
            candidates.append((-table[(m, o)], other_movie, residual))
    candidates.sort()
    chosen = candidates[:k]
    if not chosen:
        return 0.0
    weights = np.array([-c[0] for c in chosen])
    residuals = np.array([c[2] for c in chosen])
    return float((weights * residuals).sum() / (damping + weights.sum()))


def test_neighbour_term_and_blend_equal_a_hand_computation():
    rng = np.random.default_rng(4)
    table, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    history = _history(rng)
    users = np.repeat(USERS, 6)
    movies = rng.choice(np.append(MOVIES, [999]), len(users))  # 999: an unknown movie
    h = tuple(np.array(col) for col in zip(*history))
    parts = model.parts(Requests.by_user(users, movies, h))
    expected_term = [_hand_term(model, table, history, u, m, 4, 1.5) for u, m in zip(users, movies)]
    assert parts["neighbour_term"] == pytest.approx(expected_term, abs=1e-9)
    assert np.count_nonzero(parts["neighbour_term"]) > 20
    w = model.neighbourhood.weights
    expected = np.clip(w[0] + w[1] * parts["baseline"] + w[2] * parts["factor_term"]
                       + w[3] * np.array(expected_term), 1, 5)
    assert model.predict(users, movies, h) == pytest.approx(expected, abs=1e-9)
    # Without a history the no-history weights apply, not the full ones with a term of 0.
    v = model.neighbourhood.weights_without_history
    assert model.predict(users, movies) == pytest.approx(
        np.clip(v[0] + v[1] * parts["baseline"] + v[2] * parts["factor_term"], 1, 5))


def test_undamped_term_is_zero_not_nan_without_rated_neighbours():
    rng = np.random.default_rng(4)
    table, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    model.neighbourhood.damping = 0.0
    history = _history(rng)
    users = np.repeat(USERS, 6)
    movies = rng.choice(MOVIES, len(users))
    term = model.parts(Requests.by_user(users, movies, tuple(np.array(c) for c in zip(*history)))
                       )["neighbour_term"]
    expected = [_hand_term(model, table, history, u, m, 4, 0.0) for u, m in zip(users, movies)]
    assert np.isfinite(term).all() and (term == 0).sum() > 0
    assert term == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("owners_per_step, cells_per_step", [(1, 1), (3, 40), (256, 4_000_000)])
def test_neighbour_term_does_not_depend_on_how_the_work_is_cut(monkeypatch, owners_per_step,
                                                               cells_per_step):
    rng = np.random.default_rng(5)
    _, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    h = tuple(np.array(col) for col in zip(*_history(rng)))
    users, movies = rng.choice(USERS, 300), rng.choice(MOVIES, 300)
    reference = model.parts(Requests.by_user(users, movies, h))["neighbour_term"]
    monkeypatch.setattr(factors, "OWNERS_PER_STEP", owners_per_step)
    monkeypatch.setattr(factors, "CELLS_PER_STEP", cells_per_step)
    assert np.array_equal(model.parts(Requests.by_user(users, movies, h))["neighbour_term"],
                          reference)


def test_unknown_ids_get_a_finite_baseline_and_no_factor_or_term():
    rng = np.random.default_rng(6)
    table, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    # An unknown user's history still counts, its residuals taken against mu + b_i.
    near = int(arrays[0][0][0])
    history = [(10**9, int(MOVIES[near]), 5.0), (1, int(MOVIES[2]), 1.0)]
    parts = model.parts(Requests.by_user([10**9, 1, 10**9], [MOVIES[0], 10**9, 10**9],
                                         tuple(np.array(c) for c in zip(*history))))
    assert list(parts["factor_term"]) == [0.0, 0.0, 0.0]
    term = _hand_term(model, table, history, 10**9, MOVIES[0], 4, 1.5)
    assert term != 0 and list(parts["neighbour_term"]) == pytest.approx([term, 0.0, 0.0])
    assert parts["baseline"][2] == pytest.approx(model.mean)
    assert parts["baseline"][0] == pytest.approx(model.mean + model.movie_bias[0])
    assert parts["baseline"][1] == pytest.approx(model.mean + model.user_bias[0])


@pytest.mark.parametrize("implicit", [False, True])
def test_saved_model_loads_without_pickle_and_predicts_the_same(tmp_path, implicit):
    rng = np.random.default_rng(7)
    _, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    if implicit:
        model = _with_implicit(model, rng)
    model.save(tmp_path / "m.npz")
    loaded = FactorModel.load(tmp_path / "m.npz")
    h = tuple(np.array(col) for col in zip(*_history(rng)))
    users, movies = rng.choice(USERS, 200), rng.choice(MOVIES, 200)
    assert np.array_equal(loaded.predict(users, movies, h), model.predict(users, movies, h))
    assert np.array_equal(loaded.predict(users, movies), model.predict(users, movies))
    assert loaded.neighbourhood.k == 4 and loaded.nbytes() == model.nbytes()
    assert (loaded.implicit is not None) == implicit


@pytest.mark.parametrize("implicit", [False, True])
def test_top_n_ranks_unrated_movies_by_the_full_blend(implicit):
    rng = np.random.default_rng(8)
    _, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    if implicit:
        # A weight large enough that the implicit term reorders the shortlist.
        model = _with_implicit(model, rng, weight=3.0)
    history = _history(rng)
    asked = USERS[:12]
    owner_of = {int(u): i for i, u in enumerate(asked)}
    h = [(owner_of[u], m, r) for u, m, r in history if u in owner_of]
    h_owner, h_movies, h_ratings = (np.array(c) for c in zip(*h))
    owner, ranks, movies, scores = model.top_n(asked, h_owner, h_movies, h_ratings, 3)
    for i, user in enumerate(asked):
        seen = {m for u, m, _ in history if u == user}
        others = np.array([m for m in MOVIES if m not in seen])
        mine = [(u, m, r) for u, m, r in history if u == user]
        hist = tuple(np.array(c) for c in zip(*mine)) if mine else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        raw = model.combine(model.parts(Requests.by_user(np.full(len(others), user), others,
                                                         hist)))
        best = [others[j] for j in np.lexsort((others, -raw))[:3]]
        assert list(movies[owner == i]) == best
        assert list(ranks[owner == i]) == [1, 2, 3]
        assert scores[owner == i] == pytest.approx(np.clip(np.sort(raw)[::-1][:3], 1, 5))


def test_pyfunc_frame_with_and_without_history():
    rng = np.random.default_rng(9)
    _, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    history = _history(rng)
    users = np.array([1, 2, 2, 10**9], dtype=np.int64)
    movies = np.array([MOVIES[0], MOVIES[1], MOVIES[2], MOVIES[3]], dtype=np.int64)
    lists = {u: ([m for uu, m, _ in history if uu == u], [r for uu, m, r in history if uu == u])
             for u in set(users.tolist())}
    frame = pd.DataFrame({"user_id": users, "movie_id": movies,
                          HISTORY_MOVIES: [lists[u][0] for u in users],
                          HISTORY_RATINGS: [lists[u][1] for u in users]})
    h = tuple(np.array(col) for col in zip(*history))
    assert predict_frame(model, frame) == pytest.approx(model.predict(users, movies, h))
    plain = frame[["user_id", "movie_id"]]
    assert predict_frame(model, plain) == pytest.approx(model.predict(users, movies))
    with pytest.raises(ValueError, match="give both"):
        predict_frame(model, frame.drop(columns=[HISTORY_RATINGS]))
    broken = frame.copy()
    broken.at[1, HISTORY_RATINGS] = [5.0]
    with pytest.raises(ValueError, match="row 1"):
        predict_frame(model, broken)
    with pytest.raises(ValueError, match="integers"):
        predict_frame(model, plain.astype({"user_id": "float64"}))


def test_model_size_has_no_ratings_in_it():
    rng = np.random.default_rng(10)
    _, arrays = _neighbour_table(rng)
    model = _model(rng, arrays)
    expected = (USERS.nbytes + model.user_bias.nbytes + model.user_factors.nbytes
                + model.user_has_factors.nbytes + MOVIES.nbytes + model.movie_bias.nbytes
                + model.movie_factors.nbytes + model.movie_has_factors.nbytes
                + arrays[0].nbytes + arrays[1].nbytes + 7 * 8)
    assert model.nbytes() == expected
    assert replace(model, neighbourhood=None).nbytes() < expected


@pytest.mark.parametrize("shrink", [0.0, 1.0])
def test_pairs_without_common_raters_do_not_hide_a_movies_best_neighbour(shrink):
    # Block one holds movies 1-3, block two 4-6. Movie 1 shares a rater with 4 only: its
    # similarities to 5 and 6 have no common raters and must be 0, not 0/0 (NaN), which would
    # make the cut at its second best NaN and drop its one real neighbour.
    user = np.array([1, 1, 2, 2, 3, 3, 4], dtype=np.int32)
    movie = np.array([1, 4, 2, 5, 3, 4, 6], dtype=np.int32)
    residual = np.array([1.0, 2.0, -1.0, 0.5, 0.5, 1.0, 1.0], dtype=np.float32)
    in_first = movie <= 3
    first, other, similarity = neighbours.pair_statistics(user, movie, residual, in_first, False,
                                                          shrink, keep=2)
    best = {(int(a), int(b)): float(s) for a, b, s in zip(first, other, similarity)}
    assert np.isfinite(similarity).all()
    assert best[(1, 4)] == pytest.approx(2.0 / math.sqrt(5.0) * 1 / (1 + shrink), rel=1e-6)
    assert (1, 5) not in best and (1, 6) not in best


@pytest.mark.parametrize("seed", range(6))
def test_lookup_finds_the_same_positions_as_a_binary_search(seed):
    # Dense ids (the movies) are looked up through a table, sparse ones by binary search:
    # both must give searchsorted's answer, duplicates and ids outside the range included.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    ids = np.sort(rng.choice(np.arange(-50, (5 if seed % 2 else 500) * n), n,
                             replace=seed % 3 == 0))
    wanted = rng.integers(-100, 6 * n, 2000)
    pos, found = factors.lookup(ids, wanted)
    reference = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    assert np.array_equal(found, ids[reference] == wanted) and found.any() and (~found).any()
    assert np.array_equal(pos[found], reference[found])
    assert 0 <= pos.min() and pos.max() < len(ids)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_implicit_user_vectors_equal_a_hand_sum_in_any_row_order(order):
    """z_u = |N(u)|^-1/2 sum of y_j: the one-pass sum over rows sorted by owner (recommend's
    tasks) and the per-column sums for any other order give the hand computation; unknown
    movies (-1) are skipped and an owner without history gets zeros."""
    rng = np.random.default_rng(5)
    y = rng.normal(0, 1, (40, 6)).astype(np.float32)
    owner = np.sort(rng.integers(0, 9, 300))
    owner[owner == 4] = 5  # owner 4 has no history
    pos = rng.integers(-1, 40, 300)
    if order == "shuffled":
        permutation = rng.permutation(300)
        owner, pos = owner[permutation], pos[permutation]
    z = factors.user_vectors(y, owner, pos, 10)
    for o in range(10):
        mine = pos[(owner == o) & (pos >= 0)]
        expected = y[mine].astype(np.float64).sum(axis=0) / math.sqrt(max(len(mine), 1))
        np.testing.assert_allclose(z[o], expected, rtol=1e-12, atol=1e-12)
    assert not z[4].any() and not z[9].any()


def test_a_history_entry_without_a_rating_is_in_n_u_only():
    """A NaN rating (a qualifying pair: rated, the rating hidden) joins N(u) for the implicit
    term and is left out of top-N lists, and is no neighbour."""
    rng = np.random.default_rng(14)
    table, arrays = _neighbour_table(rng)
    model = _with_implicit(_model(rng, arrays), rng, weight=3.0)
    history = _history(rng)
    hidden = []
    for user in USERS:
        seen = {m for u, m, _ in history if u == user}
        free = [m for m in MOVIES if m not in seen]
        hidden += [(int(user), int(m), math.nan) for m in rng.choice(free, 2, replace=False)]
    users = np.repeat(USERS, 6)
    movies = rng.choice(MOVIES, len(users))
    rated = tuple(np.array(c) for c in zip(*history))
    both = tuple(np.array(c) for c in zip(*(history + hidden)))
    with_hidden = model.parts(Requests.by_user(users, movies, both))
    without = model.parts(Requests.by_user(users, movies, rated))
    assert with_hidden["neighbour_term"] == pytest.approx(without["neighbour_term"], abs=1e-12)
    in_n_u = history + [(u, m, 0.0) for u, m, _ in hidden]
    assert with_hidden["implicit_term"] == pytest.approx(
        [_hand_implicit(model, in_n_u, int(u), int(m)) for u, m in zip(users, movies)], abs=1e-9)
    assert np.abs(with_hidden["implicit_term"] - without["implicit_term"]).max() > 0.01
    assert np.isfinite(model.predict(users, movies, both)).all()
    # top-N: each user's best movie without the hidden pairs, hidden, is no longer offered.
    owner_of = {int(u): i for i, u in enumerate(USERS)}
    h_owner = np.array([owner_of[u] for u, _, _ in history])
    owner, _, best, _ = model.top_n(USERS, h_owner, rated[1], rated[2], 1)
    firsts = [(int(USERS[o]), int(m), math.nan) for o, m in zip(owner, best)]
    more = history + firsts
    owner2, _, best2, scores2 = model.top_n(
        USERS, np.array([owner_of[u] for u, _, _ in more]), np.array([m for _, m, _ in more]),
        np.array([r for _, _, r in more]), 3)
    assert len(firsts) == len(USERS) and np.isfinite(scores2).all()
    offered = set(zip(owner2.tolist(), best2.tolist()))
    assert not offered & {(owner_of[u], m) for u, m, _ in firsts}


@pytest.mark.parametrize("same", [False, True])
def test_pair_statistics_do_not_depend_on_the_user_slices(same):
    """The products summed over slices of whole users (as a 100M pair task sums them) equal the
    products of the whole pair, for every slice size down to one user at a time."""
    rng = np.random.default_rng(31)
    pairs = {(int(u), int(m)) for u, m in zip(rng.integers(1, 80, 3000), rng.integers(1, 41, 3000))}
    user, movie = (np.array(c, dtype=np.int32) for c in zip(*sorted(pairs)))
    order = rng.permutation(len(user))
    user, movie = user[order], movie[order]
    residual = rng.normal(0, 1, len(user)).astype(np.float32)
    in_first = np.full(len(user), True) if same else movie <= 20

    def run(chunk_rows):
        out = neighbours.pair_statistics(user.copy(), movie.copy(), residual.copy(),
                                         in_first.copy(), same, 5.0, 6, chunk_rows=chunk_rows)
        return {(int(a), int(b)): float(v) for a, b, v in zip(*out)}

    whole = run(10**9)
    assert len(whole) > 100
    for chunk_rows in (500, 37, 1):
        sliced = run(chunk_rows)
        assert sliced.keys() == whole.keys()
        assert [sliced[k] for k in whole] == pytest.approx(list(whole.values()), rel=1e-5)
