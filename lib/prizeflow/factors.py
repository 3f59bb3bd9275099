"""A trained model as plain arrays, for prediction without Spark or a JVM.

Holds mu, the per-user and per-movie biases and ALS factors, keyed by sorted id arrays; predicts
with the same rules as :func:`prizeflow.als.predict` (unknown ids contribute nothing, output
clipped to the rating scale). With a :class:`Neighbourhood` it also holds the training residuals
and movie neighbours and predicts the blend of :mod:`prizeflow.blend` as Spark scored it (within
about 1e-6: the factor dot product is float32).
Saved as one ``.npz`` file.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


def _rows(starts: np.ndarray, index: int) -> slice:
    return slice(int(starts[index]), int(starts[index + 1]))


@dataclass
class Neighbourhood:
    """The item-item part of the blend (see :mod:`prizeflow.neighbours`) as CSR-style arrays.

    ``rated_*``: each known user's training residuals, rows in ``user_ids`` order, movies sorted;
    ``similar_*``: each movie's stored neighbours, rows in ``movie_ids`` order, others sorted."""
    k: int
    damping: float
    weights: np.ndarray  # intercept, baseline, factor_term, neighbour_term
    user_ids: np.ndarray
    rated_starts: np.ndarray
    rated_movies: np.ndarray
    rated_residuals: np.ndarray
    movie_ids: np.ndarray
    similar_starts: np.ndarray
    similar_movies: np.ndarray
    similar_values: np.ndarray

    def term(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        u_pos, u_found = FactorModel._lookup(self.user_ids, users)
        m_pos, m_found = FactorModel._lookup(self.movie_ids, movies)
        out = np.zeros(len(users))
        for row in np.nonzero(u_found & m_found)[0]:
            rated = _rows(self.rated_starts, u_pos[row])
            similar = _rows(self.similar_starts, m_pos[row])
            common, in_rated, in_similar = np.intersect1d(
                self.rated_movies[rated], self.similar_movies[similar], assume_unique=True,
                return_indices=True)
            if len(common) == 0:
                continue
            weights = self.similar_values[similar][in_similar]
            # The k most similar, ties broken by movie id: the order Spark ranks them in.
            best = np.lexsort((common, -weights))[:self.k]
            residuals = self.rated_residuals[rated][in_rated]
            out[row] = (weights[best] * residuals[best]).sum() / (self.damping + weights[best].sum())
        return out


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

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    def save(self, path: str | Path) -> None:
        extra = {}
        if self.neighbourhood is not None:
            nb = self.neighbourhood
            extra = {f"nb_{f.name}": getattr(nb, f.name) for f in fields(nb)
                     if f.name not in ("k", "damping")}
            extra["nb_scalars"] = np.array([nb.k, nb.damping], dtype=np.float64)
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
            return cls(str(data["kind"]), mean, low, high,
                       **{k: data[k] for k in ("user_ids", "user_bias", "user_factors",
                                              "user_has_factors", "movie_ids", "movie_bias",
                                              "movie_factors", "movie_has_factors")},
                       neighbourhood=neighbourhood)

    @staticmethod
    def _lookup(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``wanted`` in the sorted ``ids`` and whether each was found."""
        if len(ids) == 0:
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        pos = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
        return pos, ids[pos] == wanted

    def predict(self, user_ids, movie_ids) -> np.ndarray:
        return np.clip(self.raw_predict(user_ids, movie_ids), self.low, self.high)

    def raw_predict(self, user_ids, movie_ids) -> np.ndarray:
        """The prediction before clipping to the rating scale (what rankings order by)."""
        users = np.asarray(user_ids, dtype=np.int64)
        movies = np.asarray(movie_ids, dtype=np.int64)
        if users.shape != movies.shape:
            raise ValueError("user_ids and movie_ids must have the same length")
        u_pos, u_found = self._lookup(self.user_ids, users)
        m_pos, m_found = self._lookup(self.movie_ids, movies)
        both = (u_found & self.user_has_factors[u_pos]) & (m_found & self.movie_has_factors[m_pos])
        dot = np.einsum("ij,ij->i", self.user_factors[u_pos].astype(np.float64),
                        self.movie_factors[m_pos].astype(np.float64))
        if self.kind == "plain":
            raw = np.where(both, dot, self.mean)
        else:
            baseline = (self.mean + np.where(u_found, self.user_bias[u_pos], 0.0)
                        + np.where(m_found, self.movie_bias[m_pos], 0.0))
            factor_term = np.where(both, dot, 0.0)
            if self.neighbourhood is None:
                raw = baseline + factor_term
            else:
                w = self.neighbourhood.weights
                raw = (w[0] + w[1] * baseline + w[2] * factor_term
                       + w[3] * self.neighbourhood.term(users, movies))
        return raw


def shortlist_size(model: FactorModel, n: int) -> int:
    """Movies ranked by the factor score before the blend re-ranks them (n without a blend)."""
    return n if model.neighbourhood is None else max(4 * n, n + 50)


def top_n(model: FactorModel, user_ids: np.ndarray, rated: list, n: int):
    """The ``n`` best-scoring movies for each user, excluding the movies in ``rated[i]``.

    Ranks by the unclipped score (clipping at the top of the scale would tie every strong
    recommendation); returns (user_ids, ranks, movie_ids, predicted ratings) as flat arrays.
    With a neighbourhood blend, scoring the whole catalogue per user would cost a neighbour
    lookup per movie: the factor score picks a shortlist and the blended score ranks it."""
    users = np.asarray(user_ids, dtype=np.int64)
    u_pos, u_found = FactorModel._lookup(model.user_ids, users)
    movie_factors = model.movie_factors.astype(np.float32) * model.movie_has_factors[:, None]
    user_factors = model.user_factors[u_pos] * (u_found & model.user_has_factors[u_pos])[:, None]
    scores = user_factors @ movie_factors.T
    if model.kind == "plain":
        scores = np.where(model.movie_has_factors[None, :] & (u_found & model.user_has_factors[u_pos])[:, None],
                          scores, model.mean)
    else:
        scores = (scores + model.movie_bias[None, :]
                  + np.where(u_found, model.user_bias[u_pos], 0.0)[:, None] + model.mean)
    for row, movies in enumerate(rated):
        if movies is not None and len(movies):
            pos, found = FactorModel._lookup(model.movie_ids, np.asarray(movies, dtype=np.int64))
            scores[row, pos[found]] = -np.inf
    k = min(shortlist_size(model, n), scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(users), 1))
    best_scores = np.take_along_axis(scores, best, axis=1)
    if model.neighbourhood is not None:
        blended = model.raw_predict(np.repeat(users, k), model.movie_ids[best].ravel())
        best_scores = np.where(np.isfinite(best_scores), blended.reshape(best.shape), -np.inf)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    k = min(n, k)
    best = np.take_along_axis(best, order, axis=1)[:, :k]
    best_scores = np.take_along_axis(best_scores, order, axis=1)[:, :k]
    keep = np.isfinite(best_scores)  # a user who rated nearly everything gets fewer
    ranks = np.tile(np.arange(1, k + 1), (len(users), 1))
    return (np.repeat(users, k)[keep.ravel()], ranks[keep], model.movie_ids[best][keep],
            np.clip(best_scores[keep], model.low, model.high))
