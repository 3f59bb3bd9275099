"""``prizeflow blend --versions 3,5,7``: blend registered models into one, and gate it.

    prizeflow blend --conf conf/local.yaml --versions 3,5
    spark-submit --packages io.delta:... jobs/blend.py --conf conf/<env>.yaml --versions 3,5

The members are versions of ``mlflow.registered_model``, each loaded verified
(:mod:`prizeflow.model_integrity`). They must share one test set (the same ``gate.split``: one
data version, one split) and must not have been refit on train + validation (their validation
predictions would be in-sample, and weights learned on them would favour the most overfit
member). Each member scores the validation and test ratings of that split in Spark tasks with
its own rule (:func:`prizeflow.scoring.score`, each user's history from the training part and
the qualifying pairs, as the member scored its own test set); the blend's weights are least
squares on validation (:func:`prizeflow.blend.fit_nested_weights`, one aggregation); the test
set only measures.

The blend is logged as a run of the experiment (``prizeflow.command`` = ``blend``) with the
members' gate record and data params, its own test RMSE, weights and lifts, and one pyfunc that
carries every member's arrays (:mod:`prizeflow.model_blend`); then :func:`prizeflow.registry.
register` gates it like any train run. Nothing proportional to the ratings reaches the driver:
the weights come from (k + 1)^2 sums.
"""

from __future__ import annotations

import logging
from typing import Any

from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import (data, metrics, partitions, registry, scoring, splits, tracking,
                       train_runs)
from prizeflow.blend import fit_nested_weights
from prizeflow.blend_scoring import blended_column, member_predictions
from prizeflow.columns import MOVIE_ID, PREDICTION, RATED_ON, RATING, TAG, USER_ID
from prizeflow.config import Config
from prizeflow.errors import JobError, first_line
from prizeflow.factors import FactorModel
from prizeflow.model_blend import BlendedModel, member_column

logger = logging.getLogger(__name__)


class BlendError(JobError):
    """Versions that cannot be blended; the message names the version and why."""


def parse_versions(text: str) -> tuple[int, ...]:
    """``"3,5,7"`` as (3, 5, 7): at least two distinct version numbers."""
    try:
        versions = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BlendError(f"--versions {text!r}: give registered version numbers separated by "
                         "commas, e.g. 3,5") from None
    if min(versions) < 1:
        raise BlendError(f"--versions {text!r}: registered versions are numbered from 1")
    if len(versions) < 2 or len(set(versions)) != len(versions):
        raise BlendError(f"--versions {text!r}: a blend needs at least two distinct versions")
    return versions


def check_blend(config: Config, versions: str) -> None:
    parse_versions(versions)


def blend(spark: SparkSession, config: Config, versions: str) -> dict[str, Any]:
    """Blend the registered ``versions`` (see the module docstring) and register the blend
    through the gate; the register's summary with the blend's own figures."""
    import mlflow

    numbers = parse_versions(versions)
    experiment_id = tracking.configure(config, create=False)
    if experiment_id is None:
        raise BlendError(f"no MLflow experiment {config.mlflow.experiment!r}: train and "
                         "register models first")
    client = MlflowClient()
    name = config.mlflow.registered_model
    candidates = [_member(client, name, number) for number in numbers]
    _check_one_test_set(candidates, numbers)
    models = tuple(_load_member(client, name, number) for number in numbers)

    split, unrated = registry.candidate_split(spark, config, candidates[0])
    columns = (USER_ID, MOVIE_ID, RATING, RATED_ON)
    history = data.with_unrated(splits.part(split, splits.TRAIN).select(*columns), unrated)
    wanted = (splits.part(split, splits.VALIDATION).select(*columns)
              .withColumn(TAG, F.lit(scoring.VALIDATION_TAG))
              .unionByName(splits.part(split, splits.TEST).select(*columns)
                           .withColumn(TAG, F.lit(scoring.TEST_TAG))))
    buckets = scoring.bucket_count(history.count(), partitions.parallelism(spark))
    scored = member_predictions(models, wanted, history, buckets).persist()
    try:
        _check_every_rating_scored(wanted, scored)
        blended, figures = _fit(models, numbers, scored)
    finally:
        scored.unpersist()

    left_out = _shared_left_out(candidates)
    baselines = _strongest_baselines(candidates)
    lift = {k: metrics.lift_pct(v, figures["test_rmse"]) for k, v in baselines.items()
            if k not in left_out}
    member_runs = {n: c.run_id for n, c in zip(numbers, candidates)}
    with mlflow.start_run(experiment_id=experiment_id, run_name="blend") as run:
        train_runs.log_blend(candidates[0].train_run, numbers, _weight_params(blended),
                             {**figures, **{f"{train_runs.LIFT_PREFIX}{k}": v
                                            for k, v in lift.items()}},
                             baselines, left_out, member_runs)
        # The gate's RMSE, as a param: fixed from now on.
        from prizeflow import gate, model_integrity

        mlflow.log_params(gate.test_rmse_param(figures["test_rmse"]))
        model_info = tracking.log_blended_model(blended)
        train_runs.log_model_uri(model_info.model_uri)
        mlflow.log_param(model_integrity.DIGEST_PARAM,
                         model_integrity.digest_of(model_info.model_uri))
    logger.info("%s: validation RMSE %.5f, test RMSE %.5f (members %s)", blended.label(),
                figures["validation_rmse_blend"], figures["test_rmse"],
                ", ".join(f"v{n} {figures[f'member_test_rmse_v{n}']:.5f}" for n in numbers))
    # Logged before the gate: should register fail, `register --run-id` gates this run later.
    logger.info("blend run %s logged; registering it (again later: `prizeflow register "
                "--run-id %s`)", run.info.run_id, run.info.run_id)
    registered = registry.register(spark, config, run.info.run_id)
    return {**registered, "blend_run_id": run.info.run_id, "blend_of": list(numbers),
            "weights": dict(zip(("intercept", *(f"v{n}" for n in numbers)), blended.weights)),
            "validation_rmse": figures["validation_rmse_blend"],
            "member_test_rmse": {n: figures[f"member_test_rmse_v{n}"] for n in numbers}}


def _member(client: MlflowClient, name: str, number: int) -> registry.Candidate:
    """The train run behind version ``number`` as a gate candidate; refused when it was refit
    on validation or is itself a blend."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version(name, str(number))
    except MlflowException as exc:
        raise BlendError(f"no version {number} of registered model {name!r}: "
                         f"{first_line(getattr(exc, 'message', None) or str(exc))}") from exc
    run_id = version.tags.get("train_run_id")
    if not run_id:
        raise BlendError(f"{name!r} v{number} has no train_run_id tag: prizeflow did not "
                         "register it")
    candidate = registry.Candidate.of(train_runs.get(client, run_id))
    if candidate.train_run.blend_of:
        raise BlendError(f"{name!r} v{number} is itself a blend (of "
                         f"{', '.join(f'v{v}' for v in candidate.train_run.blend_of)}): blend "
                         "its members instead")
    if "refit" not in candidate.train_run.params:
        raise BlendError(f"{name!r} v{number}: its train run {run_id} records no refit flag "
                         "(an earlier prizeflow trained it): train it again with "
                         "train.refit_on_validation: false")
    if candidate.train_run.refit:
        raise BlendError(f"{name!r} v{number} was refit on train + validation (train run "
                         f"{run_id}): its validation predictions are in-sample; blend models "
                         "trained with train.refit_on_validation: false")
    return candidate


def _load_member(client: MlflowClient, name: str, number: int) -> FactorModel:
    model = registry.load_version(name, client.get_model_version(name, str(number)))
    if not isinstance(model, FactorModel):
        raise BlendError(f"{name!r} v{number} holds a {type(model).__name__}, not a single "
                         "prizeflow model (FactorModel)")
    return model


def _check_one_test_set(candidates: list[registry.Candidate], numbers: tuple[int, ...]) -> None:
    first = candidates[0]
    for number, other in zip(numbers[1:], candidates[1:]):
        if other.record.split != first.record.split:
            raise BlendError(
                f"v{numbers[0]} and v{number} were tested on different test sets (ratings "
                f"Delta versions {first.train_run.params.get('data_version')} and "
                f"{other.train_run.params.get('data_version')}, or another split): blend "
                "versions trained on one data version with one split")


def _check_every_rating_scored(wanted: DataFrame, scored: DataFrame) -> None:
    """Every validation and test rating has exactly one row with every member's prediction."""
    expected = {r[TAG]: r["count"] for r in wanted.groupBy(TAG).count().collect()}
    got = {r[TAG]: r["count"] for r in scored.groupBy(TAG).count().collect()}
    if expected != got:
        raise BlendError(f"the members' predictions have {got} rows per part for {expected} "
                         "ratings (tag 1 validation, 2 test): row counts differ (a rating key "
                         "repeated or a row lost in scoring); nothing was logged")


def _fit(models: tuple[FactorModel, ...], numbers: tuple[int, ...],
         scored: DataFrame) -> tuple[BlendedModel, dict[str, float]]:
    """The blend's weights on validation and its errors and the members' on test."""
    on_validation = scored.where(F.col(TAG) == scoring.VALIDATION_TAG)
    on_test = scored.where(F.col(TAG) == scoring.TEST_TAG)
    weights = {}
    for with_history in (True, False):
        names = tuple(member_column(i, with_history) for i in range(len(models)))
        weights[with_history] = tuple(fit_nested_weights(on_validation, names)[-1])
    blended = BlendedModel(models, numbers, weights[True], weights[False],
                           min(m.low for m in models), max(m.high for m in models))
    test = metrics.errors(on_test.withColumn(PREDICTION, blended_column(blended)))
    without = metrics.errors(on_test.withColumn(PREDICTION, blended_column(blended, False)))
    validation = metrics.errors(on_validation.withColumn(PREDICTION, blended_column(blended)))
    figures = {"test_rmse": test.rmse, "test_mae": test.mae, "test_ratings": float(test.count),
               "test_rmse_without_history": without.rmse,
               "validation_rmse_blend": validation.rmse}
    for index, number in enumerate(numbers):
        figures[f"member_test_rmse_v{number}"] = metrics.errors(
            on_test, prediction=member_column(index)).rmse
    return blended, figures


def _weight_params(model: BlendedModel) -> dict[str, float]:
    names = ("intercept", *(f"v{n}" for n in model.versions))
    return {**{f"blend_weight_{k}": w for k, w in zip(names, model.weights)},
            **{f"blend_weight_without_history_{k}": w
               for k, w in zip(names, model.weights_without)}}


def _strongest_baselines(candidates: list[registry.Candidate]) -> dict[str, float]:
    """Each baseline every member measured, at its lowest test RMSE among them (the members
    may have fitted the bias baseline at different regularisations): the blend's lift is
    over the strongest."""
    shared = set.intersection(*(set(c.train_run.baselines) for c in candidates))
    return {k: min(c.train_run.baselines[k] for c in candidates) for k in sorted(shared)}


def _shared_left_out(candidates: list[registry.Candidate]) -> dict[str, str]:
    """The baselines a member leaves out, and why (one test set: the members agree)."""
    left_out: dict[str, str] = {}
    for candidate in candidates:
        left_out.update(candidate.train_run.baselines_left_out)
    return left_out
