"""The trained model as plain arrays, and the one prediction rule every path uses.

A :class:`FactorModel` holds mu, the per-user and per-movie biases and ALS factors (keyed by
sorted id arrays) and, with the neighbourhood blend, each movie's stored neighbours and the blend
weights. Its size is O(users x rank + movies x neighbours): no rating is stored in it.

The parts, for user u and movie i, and how they combine (:meth:`FactorModel.rule`, a
:class:`prizeflow.rule.Rule` that every numpy, Spark and SQL form is generated from):

    baseline  = mu + b_u + b_i                       (an unknown id adds no bias)
    factor    = p_u . q_i                            (0 when ALS has no factors for u or i)
    term      = neighbour term of :mod:`prizeflow.neighbours` from u's rating history
    implicit  = z_u . w_i, z_u from the set of movies in u's history (:mod:`prizeflow.implicit`)
    with a history:    clip(w0 + w1 baseline + w2 factor + w3 term [+ w4 implicit])
    without a history: clip(v0 + v1 baseline + v2 factor)        (weights learned for that case)
    no blend:          clip(baseline + factor)
    plain kind:        clip(factor where ALS knows u and i, else mu)

The history is the user's ratings (movie, rating), and the movies the user rated without the
rating being known (a rating of NaN: the qualifying pairs), which count in N(u) only; the
residuals the term averages are rating - baseline under this model's own biases. ``train`` and
``recommend`` score in Spark by calling these same functions inside tasks, with each user's
history read from the lake, so the test RMSE a version is registered with is the RMSE of this
code. Online, the pyfunc takes the history from the request or, without one, uses the weights
learned for that case.
Saved as one ``.npz`` file, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from prizeflow.rule import BASELINE, DAY_TERM, FACTOR, IMPLICIT, NEIGHBOUR, Rule, blend_parts
from prizeflow.time_baseline import TimeEffects, day_bias, deviation

# Bounds on the working set of one step of the neighbour term: owners (users, or request rows
# with their own history) per dense lookup table, and wanted rows x stored neighbours.
OWNERS_PER_STEP = 256
CELLS_PER_STEP = 4_000_000


def take(values: np.ndarray, pos: np.ndarray, found: np.ndarray, default=0.0) -> np.ndarray:
    """``values[pos]`` where ``found``, else ``default`` (also when ``values`` is empty)."""
    if len(values) == 0:
        return np.full((len(pos),) + values.shape[1:], default, dtype=values.dtype)
    picked = values[pos]
    mask = found.reshape((-1,) + (1,) * (picked.ndim - 1))
    return np.where(mask, picked, default).astype(values.dtype, copy=False)


def lookup(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``wanted`` in the sorted ``ids`` and whether each was found."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    low, span = int(ids[0]), int(ids[-1]) - int(ids[0]) + 1
    if len(wanted) > 256 and span <= 4 * len(ids):
        # Dense ids (the movies): one table read per id instead of a binary search.
        table = np.zeros(span + 1, dtype=np.int64)
        table[ids[::-1] - low] = np.arange(len(ids) - 1, -1, -1)  # the first of equal ids
        offset = wanted - low
        inside = (offset >= 0) & (offset < span)
        pos = table[np.where(inside, offset, span)]
        return pos, inside & (ids[pos] == wanted)
    pos = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    return pos, ids[pos] == wanted


@dataclass
class Neighbourhood:
    """The item-item part of the blend: each movie's most similar movies and the weights.

    ``neighbours[m]`` are positions in the model's ``movie_ids`` (-1 pads a short row), most
    similar first, ties by lower movie id; ``similarities[m]`` their positive similarities."""
    k: int
    damping: float
    # intercept, baseline, factor_term, neighbour_term[, implicit_term][, day_term]
    weights: np.ndarray
    weights_without_history: np.ndarray  # intercept, baseline, factor_term
    neighbours: np.ndarray  # int32 (movies, keep)
    similarities: np.ndarray  # float32 (movies, keep)

    def term(self, wanted_owner: np.ndarray, wanted_pos: np.ndarray, history_owner: np.ndarray,
             history_pos: np.ndarray, history_residual: np.ndarray, owners: int) -> np.ndarray:
        """The damped similarity-weighted mean of each owner's residuals on the ``k`` movies
        most similar to the wanted one among those the owner rated; 0 with no such movie.

        Owners are 0..owners-1 (a user, or a request row with its own history); movie positions
        index the model's movies (-1: unknown, which has no neighbours and is no neighbour)."""
        out = np.zeros(len(wanted_owner))
        movies = self.neighbours.shape[0]
        known = np.asarray(history_pos) >= 0
        history_owner, history_pos = history_owner[known], history_pos[known]
        history_residual = history_residual[known]
        wanted_rows = np.nonzero(np.asarray(wanted_pos) >= 0)[0]
        if movies == 0 or len(wanted_rows) == 0 or len(history_owner) == 0:
            return out
        wanted_rows = wanted_rows[np.argsort(wanted_owner[wanted_rows], kind="stable")]
        history_rows = np.argsort(history_owner, kind="stable")
        sorted_history_owner = history_owner[history_rows]
        keep = self.neighbours.shape[1]
        step_owners = min(OWNERS_PER_STEP, owners)
        # For the owners of one step: whether (owner - first, movie) is rated, and by which
        # history row. A user rates a few hundred of a movie's `keep` stored neighbours at
        # most, so the cells are tested against one owner's row of the small boolean table
        # (about 18 KB for the Prize's movies: it stays in the CPU's cache) and only the hits
        # (a few percent) go on to the row table, the weights and the residuals. Each row ends
        # with a spare column that is never rated: a padding neighbour (-1) indexes it.
        stride = movies + 1
        rated = np.zeros((step_owners, stride), dtype=bool)
        table = np.empty(step_owners * stride, dtype=np.int32)  # read only where rated
        for start, stop in _steps(wanted_owner[wanted_rows], keep):
            rows = wanted_rows[start:stop]
            first = int(wanted_owner[rows[0]])
            last = int(wanted_owner[rows[-1]])
            lo, hi = np.searchsorted(sorted_history_owner, [first, last + 1])
            if lo == hi:
                continue
            mine = history_rows[lo:hi]
            local_owner, local_pos = history_owner[mine] - first, history_pos[mine]
            table[local_owner * stride + local_pos] = mine
            rated[local_owner, local_pos] = True
            near = self.neighbours[wanted_pos[rows]]
            owner_of_row = wanted_owner[rows] - first
            bounds = np.searchsorted(owner_of_row, np.arange(last - first + 2))
            # Hits in row-major order: per wanted row, in stored order (most similar first).
            # np.take, not rated[owner][near]: fancy indexing with int32 indices converts
            # them first and took 3x as long (99 against 34 us for 60 x 500 cells).
            hits = [np.flatnonzero(np.take(rated[owner], near[begin:end])) + begin * keep
                    for owner, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:]))
                    if end > begin]
            flat = np.concatenate(hits)  # positions in `near`, row-major
            hit_row = flat // keep
            per_row = np.bincount(hit_row, minlength=len(rows))
            within = np.arange(len(hit_row)) - (np.cumsum(per_row) - per_row)[hit_row]
            used = within < self.k
            flat, hit_row = flat[used], hit_row[used]
            # Flat positions and np.take: a two-index lookup cost about 3x as much.
            row_start = wanted_pos[rows].astype(np.int64) * keep
            weight = np.take(self.similarities,
                             row_start[hit_row] + (flat - hit_row * keep)).astype(np.float64)
            cell = owner_of_row[hit_row] * stride + np.take(near, flat)
            residual = history_residual[np.take(table, cell)]
            # With damping 0, a user who rated none of the neighbours gets no term (not 0/0).
            total = self.damping + np.bincount(hit_row, weight, minlength=len(rows))
            weighted = np.bincount(hit_row, weight * residual, minlength=len(rows))
            out[rows] = np.divide(weighted, total, out=np.zeros(len(rows)), where=total > 0)
            rated[local_owner, local_pos] = False
        return out


def user_vectors(item_factors: np.ndarray, history_owner: np.ndarray, history_pos: np.ndarray,
                 owners: int) -> np.ndarray:
    """z = |N|^-1/2 sum of y_j over each owner's history movies N (rows of ``item_factors``;
    unknown movies, position -1, skipped): the implicit term's user side."""
    known = np.asarray(history_pos) >= 0
    owner, pos = np.asarray(history_owner)[known], np.asarray(history_pos)[known]
    rank = item_factors.shape[1]
    z = np.zeros((owners, rank))
    if len(owner):
        y = np.take(item_factors, pos, axis=0)
        starts = np.flatnonzero(np.diff(owner, prepend=owner[0] - 1))
        if np.all(owner[starts[1:]] > owner[starts[:-1]]):
            # Sorted by owner (recommend's tasks): one pass over the rows, summed in float64
            # in row order as np.bincount sums them, in about a third of the time.
            z[owner[starts]] = np.add.reduceat(y, starts, axis=0, dtype=np.float64)
        else:
            y = y.astype(np.float64)
            for column in range(rank):
                z[:, column] = np.bincount(owner, y[:, column], minlength=owners)
        counts = np.bincount(owner, minlength=owners)
        z /= np.sqrt(np.maximum(counts, 1))[:, None]
    return z


@dataclass
class ImplicitTerm:
    """The implicit-feedback part of the blend (:mod:`prizeflow.implicit`): per movie, its
    factor y_j in the who-rated-what model and its weights w_i; rows follow the model's
    ``movie_ids`` (zeros for a movie the implicit model did not see)."""
    item_factors: np.ndarray  # float32 (movies, rank)
    weights: np.ndarray  # float32 (movies, rank)

    def user_vectors(self, history_owner: np.ndarray, history_pos: np.ndarray,
                     owners: int) -> np.ndarray:
        return user_vectors(self.item_factors, history_owner, history_pos, owners)

    def term(self, wanted_owner: np.ndarray, wanted_pos: np.ndarray,
             vectors: np.ndarray) -> np.ndarray:
        """z_u . w_i per wanted row, from the owners' :meth:`user_vectors` (0 for an unknown
        movie)."""
        out = np.zeros(len(wanted_owner))
        known = np.asarray(wanted_pos) >= 0
        if known.any():
            out[known] = np.einsum("ij,ij->i", vectors[wanted_owner[known]],
                                   self.weights[wanted_pos[known]].astype(np.float64))
        return out


def _steps(sorted_owner: np.ndarray, keep: int):
    """(start, stop) slices of rows sorted by owner: whole owners, at most OWNERS_PER_STEP of
    them and about CELLS_PER_STEP neighbour cells per step (one big owner gets a step alone)."""
    per_step = max(1, CELLS_PER_STEP // max(1, keep))
    start, n = 0, len(sorted_owner)
    while start < n:
        first = sorted_owner[start]
        stop = min(n, start + per_step)
        stop = min(stop, int(np.searchsorted(sorted_owner, first + OWNERS_PER_STEP)))
        if stop < n and stop > start and sorted_owner[stop] == sorted_owner[stop - 1]:
            # Do not split an owner: back up to its first row, or take it whole if alone.
            back = int(np.searchsorted(sorted_owner, sorted_owner[stop], side="left"))
            stop = back if back > start else int(
                np.searchsorted(sorted_owner, sorted_owner[stop], side="right"))
        yield start, stop
        start = stop


@dataclass
class Requests:
    """Pairs to score, each with an owner (0..owners-1) whose history applies to it.

    ``owner_users``: the user id of each owner (its biases and factors); the history rows
    (``history_owner``, ``history_movies``, ``history_ratings``) are the owners' ratings; a NaN
    rating is a movie the owner rated without the rating being known (a qualifying pair): it is
    in N(u) for the implicit term and for top-N, and no neighbour. With
    ``has_history`` false the history is unknown (not empty): the no-history weights apply.
    ``days`` and ``history_days`` (days since 1970-01-01, NaN for none) matter only to a model
    with time effects; without them every row is taken at the model's latest day."""
    owner_users: np.ndarray
    owner: np.ndarray
    movies: np.ndarray
    history_owner: np.ndarray
    history_movies: np.ndarray
    history_ratings: np.ndarray
    has_history: bool = True
    days: np.ndarray | None = None
    history_days: np.ndarray | None = None

    @classmethod
    def by_user(cls, users, movies, history=None, days=None) -> "Requests":
        """Pairs grouped by user; ``history`` = (user ids, movie ids, ratings[, days]) or
        None; ``days``: each pair's day, or None."""
        users = np.asarray(users, dtype=np.int64)
        owner_users, owner = np.unique(users, return_inverse=True)
        movies = np.asarray(movies, dtype=np.int64)
        days = None if days is None else np.asarray(days, dtype=np.float64)
        if history is None:
            empty = np.zeros(0, dtype=np.int64)
            return cls(owner_users, owner, movies, empty, empty, np.zeros(0),
                       has_history=False, days=days)
        h_users, h_movies, h_ratings, *h_days = (np.asarray(a) for a in history)
        h_pos, h_found = lookup(owner_users, h_users)
        history_days = np.asarray(h_days[0], dtype=np.float64)[h_found] if h_days else None
        return cls(owner_users, owner, movies, h_pos[h_found],
                   np.asarray(h_movies, dtype=np.int64)[h_found],
                   np.asarray(h_ratings, dtype=np.float64)[h_found], days=days,
                   history_days=history_days)


@dataclass
class FactorModel:
    kind: str
    mean: float
    low: float
    high: float
    user_ids: np.ndarray  # sorted int64
    user_bias: np.ndarray  # float64, zeros for the plain kind
    user_factors: np.ndarray  # float32, (users, rank); rows of zeros where ALS has none
    user_has_factors: np.ndarray  # bool
    movie_ids: np.ndarray
    movie_bias: np.ndarray
    movie_factors: np.ndarray
    movie_has_factors: np.ndarray
    neighbourhood: Neighbourhood | None = None
    implicit: ImplicitTerm | None = None
    time: TimeEffects | None = None
    user_time: np.ndarray | None = None  # float64 (users, 2): mean rating day, alpha (drift)

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    def nbytes(self) -> int:
        arrays = [getattr(self, f.name) for f in fields(self)]
        if self.neighbourhood is not None:
            arrays += [getattr(self.neighbourhood, f.name) for f in fields(Neighbourhood)]
        if self.implicit is not None:
            arrays += [self.implicit.item_factors, self.implicit.weights]
        if self.time is not None:
            arrays.append(self.time.movie_bins)
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))

    def movie_side(self) -> "FactorModel":
        """The model without its users: what a Spark task needs besides its users' rows."""
        return self.with_users(np.zeros(0, dtype=np.int64), np.zeros(0),
                               np.zeros((0, self.rank), dtype=np.float32), np.zeros(0, dtype=bool),
                               None if self.time is None else np.zeros((0, 2)))

    def with_users(self, user_ids, user_bias, user_factors, user_has_factors,
                   user_time=None) -> "FactorModel":
        """This model with another user side (``user_time``: (users, 2) mean day and alpha,
        for a model with time effects)."""
        order = np.argsort(np.asarray(user_ids, dtype=np.int64), kind="stable")
        if self.time is not None:
            if user_time is None:
                raise ValueError("a model with time effects needs each user's mean day and "
                                 "alpha (user_time)")
            user_time = np.asarray(user_time, dtype=np.float64).reshape(-1, 2)
            if len(user_time) != len(order):
                raise ValueError(f"user_time has {len(user_time)} rows for {len(order)} users")
            user_time = user_time[order]
        else:
            user_time = None
        return replace(self, user_ids=np.asarray(user_ids, dtype=np.int64)[order],
                       user_bias=np.asarray(user_bias, dtype=np.float64)[order],
                       user_factors=np.asarray(user_factors, dtype=np.float32)[order],
                       user_has_factors=np.asarray(user_has_factors, dtype=bool)[order],
                       user_time=user_time)

    # --- saving -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        extra = {}
        if self.neighbourhood is not None:
            nb = self.neighbourhood
            extra = {f"nb_{f.name}": getattr(nb, f.name) for f in fields(nb)
                     if f.name not in ("k", "damping")}
            extra["nb_scalars"] = np.array([nb.k, nb.damping], dtype=np.float64)
        if self.implicit is not None:
            extra["im_item_factors"] = self.implicit.item_factors
            extra["im_weights"] = self.implicit.weights
        if self.time is not None:
            extra["tm_days"] = np.array([self.time.first_day, self.time.last_day], np.int64)
            extra["tm_movie_bins"] = self.time.movie_bins
            extra["tm_user_time"] = self.user_time
            if self.time.day_reg is not None:
                extra["tm_day_reg"] = np.array([self.time.day_reg])
        np.savez_compressed(
            path, kind=np.array(self.kind), scalars=np.array([self.mean, self.low, self.high]),
            user_ids=self.user_ids, user_bias=self.user_bias, user_factors=self.user_factors,
            user_has_factors=self.user_has_factors, movie_ids=self.movie_ids,
            movie_bias=self.movie_bias, movie_factors=self.movie_factors,
            movie_has_factors=self.movie_has_factors, **extra)

    @classmethod
    def load(cls, path: str | Path) -> "FactorModel":
        with np.load(path, allow_pickle=False) as data:
            mean, low, high = (float(x) for x in data["scalars"])
            neighbourhood = None
            if "nb_scalars" in data:
                k, damping = data["nb_scalars"]
                neighbourhood = Neighbourhood(
                    int(k), float(damping),
                    **{f.name: data[f"nb_{f.name}"] for f in fields(Neighbourhood)
                       if f.name not in ("k", "damping")})
            implicit = None
            if "im_weights" in data:
                implicit = ImplicitTerm(data["im_item_factors"], data["im_weights"])
            time, user_time = None, None
            if "tm_days" in data:
                first_day, last_day = (int(d) for d in data["tm_days"])
                day_reg = float(data["tm_day_reg"][0]) if "tm_day_reg" in data else None
                time = TimeEffects(first_day, last_day, data["tm_movie_bins"], day_reg)
                user_time = data["tm_user_time"]
            return cls(str(data["kind"]), mean, low, high,
                       **{k: data[k] for k in ("user_ids", "user_bias", "user_factors",
                                              "user_has_factors", "movie_ids", "movie_bias",
                                              "movie_factors", "movie_has_factors")},
                       neighbourhood=neighbourhood, implicit=implicit, time=time,
                       user_time=user_time)

    # --- the rule ---------------------------------------------------------------------------
    def _sides(self, users: np.ndarray, movies: np.ndarray):
        u_pos, u_found = lookup(self.user_ids, users)
        m_pos, m_found = lookup(self.movie_ids, movies)
        return u_pos, u_found, m_pos, m_found

    def baseline(self, users, movies, days=None) -> np.ndarray:
        """mu + b_u + b_i, plus with time effects the user's drift and the movie's bin bias
        on each row's day (``days``: days since 1970-01-01, NaN or None for the latest)."""
        u_pos, u_found, m_pos, m_found = self._sides(users, movies)
        out = (self.mean + take(self.user_bias, u_pos, u_found)
               + take(self.movie_bias, m_pos, m_found))
        if self.time is not None:
            days = self.time.days_or_latest(days, len(out))
            mean_day = take(self.user_time[:, 0], u_pos, u_found)
            alpha = take(self.user_time[:, 1], u_pos, u_found)
            out += alpha * deviation(days, mean_day)
            found = np.flatnonzero(m_found)
            out[found] += self.time.movie_bins[m_pos[found], self.time.bin_of(days[found])]
        return out

    def parts(self, requests: Requests,
              implicit_vectors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``baseline`` (with time effects at each row's day), ``factor_term`` and (with a
        neighbourhood and a history) ``neighbour_term``, with an implicit term
        ``implicit_term``, and with a day term (:attr:`has_day_term`) ``day_term`` for every
        request row.
        ``implicit_vectors``: the owners' z (:meth:`ImplicitTerm.user_vectors`) when the caller
        has them already (``top_n``), else they are computed from the history."""
        users = requests.owner_users[requests.owner]
        movies = requests.movies
        u_pos, u_found, m_pos, m_found = self._sides(users, movies)
        both = (take(self.user_has_factors, u_pos, u_found, False)
                & take(self.movie_has_factors, m_pos, m_found, False))
        factor = np.zeros(len(users))
        if both.any():
            factor[both] = np.einsum("ij,ij->i",
                                     self.user_factors[u_pos[both]].astype(np.float64),
                                     self.movie_factors[m_pos[both]].astype(np.float64))
        out = {"baseline": self.baseline(users, movies, requests.days), "factor_term": factor,
               "has_factors": both}
        if self.neighbourhood is not None and requests.has_history:
            h_users = requests.owner_users[requests.history_owner]
            h_residual = requests.history_ratings - self.baseline(
                h_users, requests.history_movies, requests.history_days)
            h_pos, h_found = lookup(self.movie_ids, requests.history_movies)
            # The terms that average residuals read only the rated rows; a NaN rating (a
            # qualifying pair) is in N(u) for the implicit term alone.
            rated = ~np.isnan(h_residual)
            out["neighbour_term"] = self.neighbourhood.term(
                requests.owner, np.where(m_found, m_pos, -1), requests.history_owner[rated],
                np.where(h_found, h_pos, -1)[rated], h_residual[rated],
                len(requests.owner_users))
            if self.has_day_term:
                days = (np.full(len(users), np.nan) if requests.days is None
                        else np.asarray(requests.days, dtype=np.float64))
                history_days = (np.full(len(h_residual), np.nan)
                                if requests.history_days is None
                                else np.asarray(requests.history_days, dtype=np.float64))
                out[DAY_TERM] = day_bias(requests.owner, days, requests.history_owner[rated],
                                         history_days[rated], h_residual[rated],
                                         self.time.day_reg)
            if self.implicit is not None:
                if implicit_vectors is None:
                    implicit_vectors = self.implicit.user_vectors(
                        requests.history_owner, np.where(h_found, h_pos, -1),
                        len(requests.owner_users))
                out[IMPLICIT] = self.implicit.term(requests.owner, np.where(m_found, m_pos, -1),
                                                   implicit_vectors)
        return out

    def rule(self, with_history: bool = True) -> Rule:
        """How this model's parts combine, for requests with or without a rating history."""
        if self.kind == "plain":
            return Rule.plain(self.mean, self.low, self.high)
        nb = self.neighbourhood
        if nb is None:
            return Rule(self.low, self.high)
        return Rule.linear(nb.weights if with_history else nb.weights_without_history,
                           self.low, self.high,
                           blend_parts(self.implicit is not None, self.has_day_term))

    @property
    def has_day_term(self) -> bool:
        """Whether the blend has the per-(user, day) term (time effects with a ``day_reg``)."""
        return (self.neighbourhood is not None and self.time is not None
                and self.time.day_reg is not None)

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The unclipped prediction from :meth:`parts` (what rankings order by)."""
        return self.rule(NEIGHBOUR in parts).raw(parts)

    def clip(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(raw, self.low, self.high)

    def predict(self, user_ids, movie_ids, history=None, days=None) -> np.ndarray:
        """Clipped predictions; ``history`` = (user ids, movie ids, ratings[, days]) of the
        users' ratings, or None when it is not known (the no-history weights apply); ``days``:
        each pair's day (days since 1970-01-01), or None (the model's latest day)."""
        users = np.asarray(user_ids, dtype=np.int64)
        movies = np.asarray(movie_ids, dtype=np.int64)
        if users.shape != movies.shape:
            raise ValueError("user_ids and movie_ids must have the same length")
        return self.clip(self.combine(self.parts(Requests.by_user(users, movies, history,
                                                                 days))))

    # --- recommendations --------------------------------------------------------------------
    def top_n(self, requests_users: np.ndarray, history_owner: np.ndarray,
              history_movies: np.ndarray, history_ratings: np.ndarray, n: int,
              history_days: np.ndarray | None = None):
        """The ``n`` best movies for each owner (user ``requests_users[o]``) that its history
        does not hold. Ranks by the unclipped score (clipping would tie the top of the scale).
        Scoring the whole catalogue with the full rule would cost a neighbour lookup per movie:
        a shortlist of max(4n, n + 50) is picked by the rule without the neighbour term (the
        blend's own baseline and factor weights) and then ranked by the full rule, computed as
        every other path computes it (:meth:`parts`). With time effects the lists are for the
        model's latest day; ``history_days`` are the history ratings' days (their residuals).
        Returns (owner, rank, movie_id, predicted rating) as flat arrays."""
        requests_users = np.asarray(requests_users, dtype=np.int64)
        vectors = self.implicit_vectors(len(requests_users), history_owner, history_movies)
        scores = self.shortlist_scores(requests_users, vectors)
        return rank_catalogue(
            self.movie_ids, scores, requests_users, history_owner, history_movies,
            history_ratings, history_days, n,
            lambda requests: self.combine(self.parts(requests, vectors)), self.clip)

    def implicit_vectors(self, owners: int, history_owner: np.ndarray,
                         history_movies: np.ndarray) -> np.ndarray | None:
        """The owners' z (:meth:`ImplicitTerm.user_vectors`), or None without the term."""
        if self.implicit is None:
            return None
        h_pos, h_found = lookup(self.movie_ids, history_movies)
        return self.implicit.user_vectors(history_owner, np.where(h_found, h_pos, -1), owners)

    def shortlist_scores(self, users: np.ndarray,
                         implicit_vectors: np.ndarray | None) -> np.ndarray:
        """(users, movies) float32 scores that order each user's movies as the rule without
        the neighbour term does. The user's own terms (intercept, mu, b_u) are the same for
        every movie and are left out, so one matrix product gives the rest:
        [w_f p_u, w_m z_u, 1] . [q_i, w_i, w_b b_i] (z_u, w_i: the implicit term's)."""
        rule = self.rule().without(NEIGHBOUR)
        u_pos, u_found = lookup(self.user_ids, users)
        has = take(self.user_has_factors, u_pos, u_found, False)
        user_factors = take(self.user_factors, u_pos, has).astype(np.float32)
        movie_factors = (self.movie_factors * self.movie_has_factors[:, None]).astype(np.float32)
        if rule.plain_mean is not None:
            # Plain ALS: p_u . q_i where ALS knows both, else the global mean.
            scores = user_factors @ movie_factors.T
            known = has[:, None] & self.movie_has_factors[None, :]
            return np.where(known, scores, np.float32(rule.plain_mean))
        weights = dict(rule.terms)
        user_blocks = [user_factors * np.float32(weights.get(FACTOR, 0.0))]
        movie_blocks = [movie_factors]
        if self.implicit is not None and IMPLICIT in weights:
            user_blocks.append((implicit_vectors * weights[IMPLICIT]).astype(np.float32))
            movie_blocks.append(self.implicit.weights.astype(np.float32))
        user_side = np.hstack(user_blocks + [np.ones((len(users), 1), dtype=np.float32)])
        movie_bias = self.movie_bias
        if self.time is not None:
            # At the latest day, as the lists are; the user's drift is the same for every movie.
            movie_bias = movie_bias + self.time.latest_movie_bins()
        movie_side = np.hstack(movie_blocks + [(weights.get(BASELINE, 0.0) * movie_bias)
                                               .astype(np.float32)[:, None]])
        return user_side @ movie_side.T


def rank_catalogue(movie_ids: np.ndarray, scores: np.ndarray, requests_users: np.ndarray,
                   history_owner: np.ndarray, history_movies: np.ndarray,
                   history_ratings: np.ndarray, history_days: np.ndarray | None, n: int,
                   score_pairs, clip):
    """The ``n`` best unrated movies per owner: ``scores`` (owners, movies in ``movie_ids``
    order) pick a shortlist of max(4n, n + 50) movies the owner's history does not hold, which
    ``score_pairs(requests) -> unclipped predictions`` ranks (ties by lower movie id); ``clip``
    turns the ranked scores into ratings. (owner, rank, movie_id, predicted rating), flat."""
    owners, movies = scores.shape
    h_pos, h_found = lookup(movie_ids, history_movies)
    scores[history_owner[h_found], h_pos[h_found]] = -np.inf
    size = min(max(4 * n, n + 50), movies)
    if size < movies:
        best = np.argpartition(scores, movies - size, axis=1)[:, movies - size:]
    else:
        best = np.tile(np.arange(movies), (owners, 1))
    rated = ~np.isfinite(np.take_along_axis(scores, best, axis=1))
    requests = Requests(requests_users, np.repeat(np.arange(owners), size),
                        movie_ids[best].ravel(), history_owner, history_movies,
                        history_ratings, history_days=history_days)
    best_scores = score_pairs(requests).reshape(best.shape)
    best_scores[rated] = -np.inf
    order = np.lexsort((movie_ids[best], -best_scores), axis=1)[:, :n]
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    keep = np.isfinite(best_scores)  # an owner who rated nearly everything gets fewer
    ranks = np.tile(np.arange(1, best.shape[1] + 1), (owners, 1))
    owner = np.repeat(np.arange(owners), best.shape[1])
    return (owner[keep.ravel()], ranks[keep], movie_ids[best][keep], clip(best_scores[keep]))
