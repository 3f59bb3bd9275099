"""Error metrics over held-out ratings and the Prize's lift arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from prizeflow.columns import PREDICTION, RATING

# Cinematch's published RMSE on the Netflix Prize sets (the Prize's reference system).
CINEMATCH_RMSE = {"probe": 0.9474, "quiz": 0.9514, "test": 0.9525}


@dataclass(frozen=True)
class Errors:
    rmse: float
    mae: float
    count: int


def errors(scored: DataFrame, label: str = RATING, prediction: str = PREDICTION) -> Errors:
    """RMSE and MAE over every row; a null or NaN prediction is an error, not a skipped row."""
    diff = F.col(label) - F.col(prediction)
    row = scored.agg(F.sqrt(F.avg(diff * diff)).alias("rmse"), F.avg(F.abs(diff)).alias("mae"),
                     F.count(F.lit(1)).alias("n"),
                     F.sum(F.when(F.col(prediction).isNull() | F.isnan(prediction), 1)
                           .otherwise(0)).alias("missing")).first()
    if row["n"] == 0:
        raise ValueError("cannot score an empty set of ratings")
    if row["missing"]:
        raise ValueError(f"{row['missing']} of {row['n']} rows have no prediction")
    return Errors(float(row["rmse"]), float(row["mae"]), int(row["n"]))


def lift_pct(baseline_rmse: float, model_rmse: float) -> float:
    """How much the model beats a baseline, in percent: (baseline - model) / baseline * 100."""
    if baseline_rmse <= 0:
        raise ValueError(f"baseline RMSE must be positive, got {baseline_rmse}")
    return (baseline_rmse - model_rmse) / baseline_rmse * 100.0
