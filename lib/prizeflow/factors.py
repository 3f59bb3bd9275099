"""A trained model as plain arrays, for prediction without Spark or a JVM.

Holds mu, the per-user and per-movie biases and ALS factors, keyed by sorted id arrays; predicts
with the same rules as :func:`prizeflow.als.predict` (unknown ids contribute nothing, output
clipped to the rating scale). Saved as one ``.npz`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path, kind=np.array(self.kind), scalars=np.array([self.mean, self.low, self.high]),
            user_ids=self.user_ids, user_bias=self.user_bias, user_factors=self.user_factors,
            user_has_factors=self.user_has_factors, movie_ids=self.movie_ids,
            movie_bias=self.movie_bias, movie_factors=self.movie_factors,
            movie_has_factors=self.movie_has_factors)

    @classmethod
    def load(cls, path: str | Path) -> "FactorModel":
        with np.load(path, allow_pickle=False) as data:
            mean, low, high = (float(x) for x in data["scalars"])
            return cls(str(data["kind"]), mean, low, high,
                       **{k: data[k] for k in ("user_ids", "user_bias", "user_factors",
                                              "user_has_factors", "movie_ids", "movie_bias",
                                              "movie_factors", "movie_has_factors")})

    @staticmethod
    def _lookup(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``wanted`` in the sorted ``ids`` and whether each was found."""
        if len(ids) == 0:
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        pos = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
        return pos, ids[pos] == wanted

    def predict(self, user_ids, movie_ids) -> np.ndarray:
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
            raw = (self.mean + np.where(u_found, self.user_bias[u_pos], 0.0)
                   + np.where(m_found, self.movie_bias[m_pos], 0.0) + np.where(both, dot, 0.0))
        return np.clip(raw, self.low, self.high)


def top_n(model: FactorModel, user_ids: np.ndarray, rated: list, n: int):
    """The ``n`` best-scoring movies for each user, excluding the movies in ``rated[i]``.

    Ranks by the unclipped score (clipping at the top of the scale would tie every strong
    recommendation); returns (user_ids, ranks, movie_ids, predicted ratings) as flat arrays."""
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
    k = min(n, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(users), 1))
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    keep = np.isfinite(best_scores)  # a user who rated nearly everything gets fewer
    ranks = np.tile(np.arange(1, k + 1), (len(users), 1))
    return (np.repeat(users, k)[keep.ravel()], ranks[keep], model.movie_ids[best][keep],
            np.clip(best_scores[keep], model.low, model.high))
