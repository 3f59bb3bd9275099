"""``prizeflow register``: put a training run's model into the MLflow Model Registry.

    prizeflow register [--run-id RUN] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/register.py --conf conf/<env>.yaml

Registers the model of the latest finished ``prizeflow train`` run (or ``--run-id``) under
``mlflow.registered_model`` with its test RMSE, lift, data version, params and commit as tags.
The new version takes the ``champion`` alias only if its test RMSE beats the current champion's
on the same test set; when the two runs used different data versions or splits, the champion is
first re-scored on the new run's test set (this needs Spark to read Delta). Otherwise it becomes
``challenger``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from prizeflow.jobs.common import JobError, make_parser, run_job

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("register", "Register a trained model and gate champion vs challenger.")
    parser.add_argument("--run-id", default=None, help="train run to register (default: latest)")
    return parser


def rescore_champion(spark_factory, config: dict[str, Any], candidate, name: str) -> float:
    """The champion's RMSE on the candidate run's test set, scored in Spark by the champion's
    own rule with each user's history taken from the candidate's training ratings (what the
    candidate's own test RMSE was scored with)."""
    import mlflow.pyfunc
    import yaml
    from pyspark.sql import functions as F

    from prizeflow import data, metrics, partitions, scoring, splits, training

    run_config = yaml.safe_load(
        mlflow.artifacts.load_text(f"runs:/{candidate.run.info.run_id}/config.yaml"))
    scoring_config = {**config, "split": run_config["split"],
                      "data": {"version": int(candidate.run.data.params["data_version"])}}
    spark = spark_factory()
    source = data.load_training_data(spark, scoring_config)
    method = data.choose_split_method(scoring_config, source)
    split = data.split_ratings(source, scoring_config, method)
    history_parts = [splits.TRAIN]
    if candidate.run.data.params.get("refit", "True") == "True":
        history_parts.append(splits.VALIDATION)
    history = splits.part(split, *history_parts).select("user_id", "movie_id", "rating")
    test = (splits.part(split, splits.TEST).select("user_id", "movie_id", "rating")
            .withColumn("tag", F.lit(training.TEST_TAG)))
    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model().model
    buckets = scoring.bucket_count(history.count(), partitions.parallelism(spark))
    parts = scoring.score(champion, scoring.user_frame(spark, champion), test, history, buckets)
    scored = parts.withColumn("prediction", training.predictions(champion)["prediction"])
    return metrics.errors(scored).rmse


def register(config: dict[str, Any], run_id: str | None, spark_factory) -> dict[str, Any]:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from prizeflow import registry, tracking

    experiment_id = tracking.configure(config)
    client = MlflowClient()
    name = config["mlflow"]["registered_model"]
    try:
        run = (registry.train_run(client, run_id) if run_id
               else registry.latest_train_run(client, experiment_id))
    except registry.RegistryError as exc:
        raise JobError(str(exc)) from exc
    candidate = registry.Candidate(run)

    champion = registry.current_champion(client, name)
    champion_rmse = None
    rescored = False
    if champion is not None:
        champion_rmse = float(champion.tags["test_rmse"])
        same_test_set = champion.tags.get("split") == run.data.tags.get("prizeflow.split")
        if not same_test_set:
            champion_rmse = rescore_champion(spark_factory, config, candidate, name)
            rescored = True
            logger.info("champion v%s re-scored on the new test set: RMSE %.5f (was %s on its own)",
                        champion.version, champion_rmse, champion.tags["test_rmse"])

    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(
            name, description="prizeflow ALS rating predictor (bias-aware ALS on Spark MLlib).")
    version = mlflow.register_model(candidate.model_uri, name,
                                    tags=candidate.version_tags())
    client.update_model_version(name, version.version, candidate.description())
    alias = registry.decide(candidate.test_rmse, champion_rmse)
    client.set_registered_model_alias(name, alias, version.version)
    if alias == registry.CHAMPION:
        # The challenger alias points at a version still waiting for its chance; a new
        # champion supersedes it.
        try:
            client.delete_registered_model_alias(name, registry.CHALLENGER)
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


def run(spark, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from prizeflow.spark import get_spark

    def spark_factory():
        return spark if spark is not None else get_spark(config)

    return register(config, getattr(args, "run_id", None), spark_factory)


def main(argv: list[str] | None = None) -> int:
    # Spark starts only if the champion must be re-scored on a different test set.
    return run_job("register", build_parser(), run, argv, needs_spark=False)


if __name__ == "__main__":
    sys.exit(main())
