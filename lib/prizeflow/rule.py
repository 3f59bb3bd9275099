"""The prediction rule as data: which parts a model adds up, with which weights, and the clip.

Every form of the rule is generated from one :class:`Rule`, never written by hand: numpy
(:meth:`Rule.evaluate`, used by the pyfunc, batch scoring in Spark tasks and recommendations),
Spark columns (:meth:`Rule.column`, used to score validation and test parts and the grid) and
Spark SQL text (:meth:`Rule.sql`, the ``mlflow.spark`` PipelineModel). The parts are computed
elsewhere (``baseline`` = mu + b_u + b_i, ``factor_term`` = p_u . q_i, ``neighbour_term``,
``implicit_term``, ``day_term``; see :mod:`prizeflow.factors`); a rule only says how they
combine:

    residual kind:  clip(intercept + sum(weight x part))
    plain kind:     clip(factor_term where ALS knows user and movie, else the global mean)

For a residual model without a neighbourhood the rule is baseline + factor_term; with the blend,
intercept and weights are those learned on validation, one set with the neighbour term and one
without (for requests without a rating history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # the served pyfunc needs no Spark
    from pyspark.sql import Column

BASELINE, FACTOR, NEIGHBOUR = "baseline", "factor_term", "neighbour_term"
IMPLICIT = "implicit_term"
DAY_TERM = "day_term"  # the user's bias of the request's day, from the history (time effects)
HAS_FACTORS = "has_factors"  # plain kind: whether ALS knows both the user and the movie
# In this order: a blend's weights name the leading parts (the history-free ones first).
PARTS = (BASELINE, FACTOR, NEIGHBOUR, IMPLICIT, DAY_TERM)
HISTORY_FREE = 2  # the leading parts a request without a rating history has


def blend_parts(with_implicit: bool, with_day: bool) -> tuple[str, ...]:
    """The parts a blend's weights follow, in :data:`PARTS` order: the optional terms only
    when the model has them."""
    return tuple(name for name in PARTS
                 if (name != IMPLICIT or with_implicit) and (name != DAY_TERM or with_day))


@dataclass(frozen=True)
class Rule:
    low: float
    high: float
    intercept: float = 0.0
    terms: tuple[tuple[str, float], ...] = ((BASELINE, 1.0), (FACTOR, 1.0))
    # Plain ALS: factor_term where HAS_FACTORS, else this (the global mean); no terms.
    plain_mean: float | None = None

    @classmethod
    def linear(cls, weights: Sequence[float], low: float, high: float,
               parts: Sequence[str] = PARTS) -> "Rule":
        """``weights`` = [intercept, one weight per part in ``parts`` order]."""
        if len(weights) > len(parts) + 1:
            raise ValueError(f"{len(weights)} weights for at most {len(parts)} parts")
        return cls(low, high, float(weights[0]),
                   tuple((name, float(w)) for name, w in zip(parts, weights[1:])))

    @classmethod
    def plain(cls, mean: float, low: float, high: float) -> "Rule":
        return cls(low, high, 0.0, (), float(mean))

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this rule reads."""
        return (FACTOR, HAS_FACTORS) if self.plain_mean is not None else tuple(
            name for name, _ in self.terms)

    def without(self, part: str) -> "Rule":
        """The same weights with one part left out (a shortlist scored before that part)."""
        return Rule(self.low, self.high, self.intercept,
                    tuple(t for t in self.terms if t[0] != part), self.plain_mean)

    # --- numpy -----------------------------------------------------------------------------
    def raw(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """The unclipped value (what rankings order by); the parts broadcast together."""
        if self.plain_mean is not None:
            return np.where(parts[HAS_FACTORS], parts[FACTOR], self.plain_mean)
        out = self.intercept
        for name, weight in self.terms:
            out = out + weight * parts[name]
        return np.asarray(out, dtype=np.float64)

    def clip(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(raw, self.low, self.high)

    def evaluate(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.clip(self.raw(parts))

    # --- Spark -----------------------------------------------------------------------------
    def column(self) -> "Column":
        """The clipped prediction over a frame with the parts as columns."""
        from pyspark.sql import functions as F

        from prizeflow.baselines import clip

        if self.plain_mean is not None:
            raw = F.when(F.col(HAS_FACTORS).cast("boolean"), F.col(FACTOR)).otherwise(
                F.lit(self.plain_mean))
        else:
            raw = F.lit(self.intercept)
            for name, weight in self.terms:
                raw = raw + F.lit(weight) * F.col(name)
        return clip(raw.cast("double"), self.low, self.high)

    def sql(self, parts: Mapping[str, str]) -> str:
        """The clipped prediction as Spark SQL, ``parts`` naming each part's expression."""
        if self.plain_mean is not None:
            raw = (f"CASE WHEN {parts[HAS_FACTORS]} THEN {parts[FACTOR]} "
                   f"ELSE {self.plain_mean!r}D END")
        else:
            raw = " + ".join([f"{self.intercept!r}D"]
                             + [f"{weight!r}D * ({parts[name]})" for name, weight in self.terms])
        return f"least(greatest(CAST({raw} AS DOUBLE), {self.low!r}D), {self.high!r}D)"
