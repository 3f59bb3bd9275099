"""The MLflow Model Registry side: find a training run, register its model, gate the champion.

Aliases, not stages (deprecated in MLflow 3): ``champion`` is the model to serve, ``challenger``
the latest version that did not beat it. Every version carries its test RMSE, lift, data version
and split signature as tags, so the next registration can tell whether two RMSEs are comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(ValueError):
    """No run or model to work with; the message says what is missing."""


def latest_train_run(client: MlflowClient, experiment_id: str) -> Run:
    runs = client.search_runs(
        [experiment_id],
        "tags.`prizeflow.command` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RegistryError("no finished `prizeflow train` run in the experiment: train first")
    return runs[0]


def train_run(client: MlflowClient, run_id: str) -> Run:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RegistryError(f"run {run_id} not found: {exc.message}") from exc
    if run.data.tags.get("prizeflow.command") != "train":
        raise RegistryError(f"run {run_id} is not a `prizeflow train` run")
    if run.info.status != "FINISHED":
        raise RegistryError(f"run {run_id} did not finish (status {run.info.status})")
    return run


@dataclass(frozen=True)
class Candidate:
    run: Run

    @property
    def test_rmse(self) -> float:
        return float(self.run.data.metrics["test_rmse"])

    @property
    def lift_pct(self) -> dict[str, float]:
        prefix = "lift_pct_"
        return {k[len(prefix):]: v for k, v in sorted(self.run.data.metrics.items())
                if k.startswith(prefix)}

    @property
    def model_uri(self) -> str:
        uri = self.run.data.tags.get("prizeflow.model_uri")
        if not uri:
            raise RegistryError(f"run {self.run.info.run_id} logged no model")
        return uri

    def version_tags(self) -> dict[str, str]:
        params, tags = self.run.data.params, self.run.data.tags
        out = {"test_rmse": f"{self.test_rmse:.6f}", "train_run_id": self.run.info.run_id,
               "data_version": params.get("data_version", ""),
               "split": tags.get("prizeflow.split", ""),
               "git_commit": tags.get("prizeflow.git_commit", "unknown")}
        out.update({f"lift_pct_{k}": f"{v:.3f}" for k, v in self.lift_pct.items()})
        out.update({k: v for k, v in params.items() if k.startswith("best_")})
        return out

    def description(self) -> str:
        params = self.run.data.params
        best = ", ".join(f"{k[5:]}={v}" for k, v in sorted(params.items()) if k.startswith("best_"))
        lift = ", ".join(f"{v:+.2f}% vs {k}" for k, v in self.lift_pct.items())
        return (f"ALS ({best}) trained on ratings Delta version {params.get('data_version')}: "
                f"test RMSE {self.test_rmse:.4f}; lift {lift}. Train run {self.run.info.run_id}.")


def current_champion(client: MlflowClient, name: str):
    """The version holding the champion alias, or None."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide(new_rmse: float, champion_rmse: float | None) -> str:
    """Champion only when strictly better on the same test set (or when there is none)."""
    if champion_rmse is None or new_rmse < champion_rmse:
        return CHAMPION
    return CHALLENGER
