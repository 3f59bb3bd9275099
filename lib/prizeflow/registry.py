"""The MLflow Model Registry side: find a training run, register its model, gate the champion.

:func:`register` is what ``prizeflow register`` runs; :func:`load_model` is how batch scoring
gets a registered version's model.

Aliases, not stages (deprecated in MLflow 3): ``champion`` is the model to serve, ``challenger``
the latest version that did not beat it. Every version carries its test RMSE, lift, data version
and split signature as tags, so the next registration can tell whether two RMSEs are comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from prizeflow.config import Config
from prizeflow.errors import JobError

if TYPE_CHECKING:  # the served pyfunc imports this module; it needs no Spark
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(JobError):
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


def load_model(name: str, alias: str):
    """(FactorModel, version) of ``models:/<name>@<alias>``; MLflow must be configured."""
    import mlflow.pyfunc

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"no model version of {name!r} has alias {alias!r}: "
                            "run `prizeflow register` first") from exc
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return model.unwrap_python_model().model, int(version.version)


def rescore_champion(spark: SparkSession, config: Config, candidate: Candidate,
                     name: str) -> float:
    """The champion's RMSE on the candidate run's test set, scored in Spark by the champion's
    own rule with each user's history taken from the candidate's training ratings (what the
    candidate's own test RMSE was scored with)."""
    import mlflow.artifacts
    import yaml
    from pyspark.sql import functions as F

    from prizeflow import data, metrics, partitions, scoring, splits, training
    from prizeflow.config import DataSettings, SplitSettings

    run_config = yaml.safe_load(
        mlflow.artifacts.load_text(f"runs:/{candidate.run.info.run_id}/config.yaml"))
    scoring_config = config.model_copy(update={
        "split": SplitSettings.model_validate(run_config["split"]),
        "data": DataSettings(version=int(candidate.run.data.params["data_version"]))})
    source = data.load_training_data(spark, scoring_config)
    method = data.choose_split_method(scoring_config, source)
    split = data.split_ratings(source, scoring_config, method)
    history_parts = [splits.TRAIN]
    if candidate.run.data.params.get("refit", "True") == "True":
        history_parts.append(splits.VALIDATION)
    history = splits.part(split, *history_parts).select("user_id", "movie_id", "rating")
    test = (splits.part(split, splits.TEST).select("user_id", "movie_id", "rating")
            .withColumn("tag", F.lit(training.TEST_TAG)))
    champion, _ = load_model(name, CHAMPION)
    buckets = scoring.bucket_count(history.count(), partitions.parallelism(spark))
    parts = scoring.score(champion, scoring.user_frame(spark, champion), test, history, buckets)
    scored = parts.withColumn("prediction", training.predictions(champion)["prediction"])
    return metrics.errors(scored).rmse


def register(config: Config, run_id: str | None = None,
             spark: SparkSession | None = None) -> dict[str, Any]:
    """Register the model of train run ``run_id`` (None: the latest finished one) and gate it
    against the champion; the summary. Spark (``spark``, else a session from the config) starts
    only when the champion must be re-scored on a different test set."""
    import mlflow

    from prizeflow import tracking

    experiment_id = tracking.configure(config)
    client = MlflowClient()
    name = config.mlflow.registered_model
    run = (train_run(client, run_id) if run_id
           else latest_train_run(client, experiment_id))
    candidate = Candidate(run)

    champion = current_champion(client, name)
    champion_rmse = None
    rescored = False
    if champion is not None:
        champion_rmse = float(champion.tags["test_rmse"])
        same_test_set = champion.tags.get("split") == run.data.tags.get("prizeflow.split")
        if not same_test_set:
            if spark is None:
                from prizeflow.spark import get_spark

                spark = get_spark(config)
            champion_rmse = rescore_champion(spark, config, candidate, name)
            rescored = True
            logger.info("champion v%s re-scored on the new test set: RMSE %.5f (was %s on its own)",
                        champion.version, champion_rmse, champion.tags["test_rmse"])

    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(
            name, description="prizeflow ALS rating predictor (bias-aware ALS on Spark MLlib).")
    version = mlflow.register_model(candidate.model_uri, name,
                                    tags=candidate.version_tags())
    client.update_model_version(name, version.version, candidate.description())
    alias = decide(candidate.test_rmse, champion_rmse)
    client.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION:
        # The challenger alias points at a version still waiting for its chance; a new
        # champion supersedes it.
        try:
            client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            logger.debug("no challenger alias to remove")
    logger.info("registered %s v%s as %s (test RMSE %.5f vs champion %s)", name, version.version,
                alias, candidate.test_rmse,
                "none" if champion_rmse is None else f"{champion_rmse:.5f}")
    return {"model_name": name, "version": int(version.version), "alias": alias,
            "test_rmse": candidate.test_rmse, "champion_rmse_before": champion_rmse,
            "champion_version_before": int(champion.version) if champion else None,
            "champion_rescored": rescored, "lift_pct": candidate.lift_pct,
            "train_run_id": run.info.run_id,
            "data_version": int(run.data.params["data_version"])}
