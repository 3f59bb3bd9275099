"""The time-aware part of the baseline as arrays (Spark-free: the pyfunc imports it).

:mod:`prizeflow.time_effects` fits it in Spark; a :class:`prizeflow.factors.FactorModel` with a
:class:`TimeEffects` adds, for user u, movie i and day t (days since 1970-01-01),

    alpha_u * dev_u(t) + b_i,bin(t),   dev_u(t) = sign(t - tbar_u) * |t - tbar_u| ** BETA

to mu + b_u + b_i. A request without a day (NaN) is taken at ``last_day``, the latest day of the
training data: its last bin, and the user's drift as of that day.

With ``day_reg`` set, a request with a date that comes with the user's rating history also gets
the user's bias of that very day (Koren's b_u,t): the shrunk mean residual of the history ratings the user
gave on the request's day, sum(r - baseline) / (day_reg + n). It is worked out when scoring, from
the history the request brings, so nothing per (user, day) is stored in the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BETA = 0.4  # Koren's exponent of the user drift in days


def deviation(days: np.ndarray, mean_days: np.ndarray) -> np.ndarray:
    gap = np.asarray(days, dtype=np.float64) - mean_days
    return np.sign(gap) * np.abs(gap) ** BETA


@dataclass
class TimeEffects:
    """Per movie a bias per time bin (rows follow the model's ``movie_ids``; zeros for a bin
    the movie was not rated in), and the bins: ``bins`` equal spans of [first_day, last_day].
    The per-user half (mean day, alpha) is :attr:`FactorModel.user_time`, which follows the
    users as the other user arrays do."""
    first_day: int
    last_day: int
    movie_bins: np.ndarray  # float64 (movies, bins)
    day_reg: float | None = None  # of the per-(user, day) bias; None: no such bias

    @property
    def bins(self) -> int:
        return int(self.movie_bins.shape[1])

    def days_or_latest(self, days: np.ndarray | None, count: int) -> np.ndarray:
        if days is None:
            return np.full(count, float(self.last_day))
        days = np.asarray(days, dtype=np.float64)
        return np.where(np.isnan(days), float(self.last_day), days)

    def bin_of(self, days: np.ndarray) -> np.ndarray:
        width = (self.last_day - self.first_day + 1) / self.bins
        return np.clip(np.floor((days - self.first_day) / width), 0, self.bins - 1).astype(np.int64)

    def latest_movie_bins(self) -> np.ndarray:
        """Each movie's bin bias at ``last_day`` (what a request without a day gets)."""
        return self.movie_bins[:, int(self.bin_of(np.array([float(self.last_day)]))[0])]


def day_bias(owner: np.ndarray, days: np.ndarray, history_owner: np.ndarray,
             history_days: np.ndarray, history_residual: np.ndarray, reg: float) -> np.ndarray:
    """Each request's per-(user, day) bias: the history residuals its owner gave on its day,
    summed and divided by (reg + their count); 0 where there are none, and for a request
    without a day (NaN: its day is not known). History ratings without a day count on no day."""
    def keys(who, when):
        # The owner in the high 32 bits, the day (offset to be non-negative) in the low ones.
        return (np.asarray(who, dtype=np.int64) << 32) + (when.astype(np.int64) + (1 << 31))

    dated = ~np.isnan(history_days)
    if not dated.any():
        return np.zeros(len(owner))
    known, index = np.unique(keys(history_owner[dated], history_days[dated]),
                             return_inverse=True)
    sums = np.bincount(index, history_residual[dated], len(known))
    counts = np.bincount(index, minlength=len(known))
    days = np.asarray(days, dtype=np.float64)
    asked = ~np.isnan(days)
    wanted = keys(owner, np.where(asked, days, 0.0))
    pos = np.minimum(np.searchsorted(known, wanted), len(known) - 1)
    found = asked & (known[pos] == wanted)
    return np.where(found, sums[pos] / (reg + counts[pos]), 0.0)
