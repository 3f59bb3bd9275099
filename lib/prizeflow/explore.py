"""Exploration for ``notebooks/04_explore.py``: the rating distribution of the lake and what a
training run found (validation RMSE over its grid, test RMSE and lift against the baselines)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from prizeflow.als import GridPoint
from prizeflow.grid import PointResult

logger = logging.getLogger(__name__)


def rating_distribution(ratings: DataFrame) -> DataFrame:
    """(rating, ratings, share) with one row per rating value, in rating order."""
    counts = ratings.groupBy("rating").agg(F.count(F.lit(1)).alias("ratings"))
    total = F.sum("ratings").over(Window.partitionBy())
    return counts.withColumn("share", F.col("ratings") / total).orderBy("rating")


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    test_rmse: float
    baselines: dict[str, float]  # baseline name -> test RMSE
    lift_pct: dict[str, float]  # baseline name -> lift of the model over it, percent
    grid: list[PointResult]


def training_outcome(client: MlflowClient, run: Run) -> TrainingOutcome:
    """A finished train run's metrics and its grid points (child runs) read back from MLflow."""
    metrics = run.data.metrics
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    grid = [PointResult(point=GridPoint.from_params(child.data.params),
                        iterations=int(child.data.params.get("iterations_run", 0)),
                        validation_rmse=child.data.metrics["validation_rmse"],
                        seconds=child.data.metrics.get("fit_seconds", 0.0),
                        pruned=child.data.tags.get("prizeflow.pruned") == "true")
            for child in children]
    prefix_rmse, prefix_lift = "baseline_rmse_", "lift_pct_"
    return TrainingOutcome(
        run_id=run.info.run_id, test_rmse=metrics["test_rmse"],
        baselines={k[len(prefix_rmse):]: v for k, v in metrics.items() if k.startswith(prefix_rmse)},
        lift_pct={k[len(prefix_lift):]: v for k, v in metrics.items() if k.startswith(prefix_lift)},
        grid=sorted(grid, key=lambda r: r.validation_rmse))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rating_histogram(distribution):
    """Bar chart of a ``rating_distribution`` collected to pandas."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar([f"{r:g}" for r in distribution["rating"]], distribution["share"] * 100,
                  color="tab:blue")
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xlabel("rating")
    ax.set_ylabel("share of ratings (%)")
    ax.set_title(f"rating distribution ({int(distribution['ratings'].sum()):,} ratings)")
    fig.tight_layout()
    return fig


def lift_bars(lift_pct: dict[str, float]):
    """The model's lift over each baseline in percent (the Prize's measure: 10% over Cinematch)."""
    plt = _pyplot()
    names = list(lift_pct)
    values = [lift_pct[n] for n in names]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 3.2))
    bars = ax.bar(names, values, color=["tab:green" if v > 0 else "tab:red" for v in values])
    ax.bar_label(bars, fmt="%+.2f%%", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("lift over baseline (%)")
    ax.set_title("lift = (baseline - model) / baseline")
    fig.tight_layout()
    return fig
