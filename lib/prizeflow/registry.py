"""The MLflow Model Registry side: find a training run, register its model, gate the champion.

:func:`register` is what ``prizeflow register`` runs; :func:`load_model` is how batch scoring
gets a registered version's model.

Aliases, not stages (deprecated in MLflow 3): ``champion`` is the model to serve, ``challenger``
the latest version that did not beat it. Every version carries its test RMSE, lift, data version
and split signature as tags, so the next registration can tell whether two RMSEs are comparable;
the gate compares exact metrics of the two train runs, never the rounded tags. A version's
``prizeflow.gate`` tag is written last: a version without it was left half-registered by a
crash, and the next ``register`` of the same run completes it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from prizeflow.config import Config
from prizeflow.errors import JobError, first_line

if TYPE_CHECKING:  # the served pyfunc imports this module; it needs no Spark
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
BELOW_BASELINE = "below_baseline"  # registered without an alias: worse than its bias baseline
GATE_TAG = "prizeflow.gate"


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
        # The exact value (repr round-trips a float); the gate reads the run's metric anyway.
        out = {"test_rmse": repr(self.test_rmse), "train_run_id": self.run.info.run_id,
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


def _unless_missing(lookup: Callable[[], Any], what: str):
    """``lookup()``, or None when MLflow answers that the object does not exist. Any other
    failure is a RegistryError naming ``what``: a lookup that failed must not pass for an
    empty registry (and crown a model)."""
    try:
        return lookup()
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"cannot read {what}: {_first_line(exc)}") from exc


def current_champion(client: MlflowClient, name: str):
    """The version holding the champion alias, or None when the model or the alias does not
    exist."""
    model = _unless_missing(lambda: client.get_registered_model(name),
                            f"registered model {name!r}")
    if model is None:
        return None
    version = (model.aliases or {}).get(CHAMPION)
    if version is None:
        return None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"cannot read {name!r} v{version} (@champion): "
                            f"{_first_line(exc)}") from exc


def champion_rmse(client: MlflowClient, champion) -> float:
    """The champion's exact test RMSE: the metric of the train run it came from."""
    run_id = champion.tags.get("train_run_id")
    try:
        return float(client.get_run(run_id).data.metrics["test_rmse"])
    except (MlflowException, KeyError, TypeError) as exc:
        raise RegistryError(f"cannot read the test RMSE of champion v{champion.version} "
                            f"(train run {run_id}): {_first_line(exc)}") from exc


def _int_or_none(text: str | None) -> int | None:
    return None if text in (None, "", "None") else int(text)


def _first_line(exc: BaseException) -> str:
    """An MLflow error's own message (``exc.message``), first line."""
    return first_line(getattr(exc, "message", None) or str(exc)) or type(exc).__name__


def decide(new_rmse: float, champion_rmse: float | None) -> str:
    """Champion only when strictly better on the same test set (or when there is none): an
    equal RMSE is not a win."""
    if champion_rmse is None or new_rmse < champion_rmse:
        return CHAMPION
    return CHALLENGER


def registered_version(client: MlflowClient, name: str, run_id: str):
    """The version already registered from train run ``run_id``, or None."""
    versions = _unless_missing(lambda: client.search_model_versions(f"name = '{name}'"),
                               f"the versions of {name!r}") or []
    for version in versions:
        if version.tags.get("train_run_id") == run_id:
            return version
    return None


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
        "data": DataSettings(version=int(candidate.run.data.params["data_version"]),
                             probe_version=_int_or_none(
                                 candidate.run.data.params.get("probe_version")))})
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
    only when the champion must be re-scored on a different test set. Registering a run again
    returns its version (completing a registration a crash cut short)."""
    from prizeflow import tracking

    experiment_id = tracking.configure(config, create=False)
    experiment = config.mlflow.experiment
    if experiment_id is None:
        raise RegistryError(f"no MLflow experiment {experiment!r}: run `prizeflow train` first")
    client = MlflowClient()
    name = config.mlflow.registered_model
    run = (train_run(client, run_id) if run_id
           else latest_train_run(client, experiment_id))
    if run.info.experiment_id != experiment_id:
        raise RegistryError(f"run {run.info.run_id} belongs to experiment "
                            f"{run.info.experiment_id}, not {experiment!r} ({experiment_id})")
    with _store_lock(config):
        return _gate_and_register(client, config, name, run, spark)


@contextlib.contextmanager
def _store_lock(config: Config):
    """One register at a time per local MLflow store: an exclusive flock beside the store,
    taken before the champion is read and held until the aliases are set, so two registers
    started together gate one after the other. A server has no lock to take; there the alias
    is checked again just before it moves (see :func:`_gate_and_register`)."""
    from prizeflow import tracking
    from prizeflow.lock import file_lock

    store = tracking.local_store_file(tracking.registry_uri(config.mlflow)
                                     or config.mlflow.tracking_uri)
    if store is None:
        yield None
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    lock_path = store.with_name(store.name + ".register.lock")
    with file_lock(lock_path, config.mlflow.lock_wait_seconds,
                   f"MLflow store {store} is being registered to",
                   "mlflow.lock_wait_seconds", job="register") as me:
        yield me


def _gate_and_register(client: MlflowClient, config: Config, name: str, run: Run,
                       spark: SparkSession | None) -> dict[str, Any]:
    candidate = Candidate(run)
    version = registered_version(client, name, run.info.run_id)
    if version is not None and version.tags.get(GATE_TAG):
        # What it holds now: a later champion may have taken its alias since.
        current = client.get_model_version(name, version.version)
        held = [a for a in (current.aliases or []) if a in (CHAMPION, CHALLENGER)]
        logger.info("train run %s is already registered as %s v%s (%s)", run.info.run_id, name,
                    version.version, f"@{held[0]}" if held else "no alias now")
        return _summary(name, version, held[0] if held else None, candidate, None, None, False,
                        already=True, gate=version.tags[GATE_TAG])

    champion = current_champion(client, name)
    if version is not None and champion is not None and champion.version == version.version:
        alias, best_before, rescored = CHAMPION, None, False  # crowned before a crash
    else:
        best_before, rescored = _champion_rmse_on_candidate_test(client, config, candidate,
                                                                 champion, name, spark)
        alias = decide(candidate.test_rmse, best_before)
        bias = run.data.metrics.get("baseline_rmse_bias")
        if bias is not None and candidate.test_rmse >= bias:
            logger.warning("train run %s has test RMSE %.5f, not better than its own bias "
                           "baseline %.5f: registered without an alias", run.info.run_id,
                           candidate.test_rmse, bias)
            alias = BELOW_BASELINE
    if version is None:
        version = _create_version(client, name, candidate)
    if alias == CHAMPION:
        _check_champion_unchanged(client, name, champion)
    if alias in (CHAMPION, CHALLENGER):
        client.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION:
        # The challenger alias points at a version still waiting for its chance; a new
        # champion supersedes it.
        try:
            client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            logger.debug("no challenger alias to remove")
    client.set_model_version_tag(name, version.version, GATE_TAG, alias)
    logger.info("registered %s v%s as %s (test RMSE %r vs champion %s)", name, version.version,
                alias, candidate.test_rmse, "none" if best_before is None else repr(best_before))
    return _summary(name, version, alias, candidate, best_before, champion, rescored)


def _check_champion_unchanged(client: MlflowClient, name: str, champion) -> None:
    """Before the champion alias moves: it must still be where the gate read it. Another
    register (on a server, where no lock is taken) that moved it meanwhile was gated against
    an older champion; this one stops instead of crowning a model it never compared with the
    new one. A re-run completes the registration (the version exists, its gate tag not yet)."""
    def named(version) -> str:
        return "no champion" if version is None else f"v{version.version}"

    now = current_champion(client, name)
    if named(now) != named(champion):
        raise RegistryError(f"the champion of {name!r} moved from {named(champion)} to "
                            f"{named(now)} "
                            "while this register ran (another register at the same time): run "
                            "`prizeflow register` again to gate against the new champion")


def _champion_rmse_on_candidate_test(client: MlflowClient, config: Config, candidate: Candidate,
                                     champion, name: str, spark: SparkSession | None):
    """(the champion's exact RMSE on the candidate's test set, whether it was re-scored)."""
    if champion is None:
        return None, False
    same_test_set = champion.tags.get("split") == candidate.run.data.tags.get("prizeflow.split")
    if same_test_set:
        return champion_rmse(client, champion), False
    from pyspark.sql import SparkSession

    from prizeflow.spark import get_spark, release

    # Opened here (not given, none active): ended here, so a Connect session does not linger.
    own = spark is None and SparkSession.getActiveSession() is None
    spark = get_spark(config) if spark is None else spark
    try:
        rmse = rescore_champion(spark, config, candidate, name)
    finally:
        if own:
            release(spark)
    logger.info("champion v%s re-scored on the new test set: RMSE %.5f (was %s on its own)",
                champion.version, rmse, champion.tags.get("test_rmse"))
    return rmse, True


def _create_version(client: MlflowClient, name: str, candidate: Candidate):
    import mlflow

    if _unless_missing(lambda: client.get_registered_model(name),
                       f"registered model {name!r}") is None:
        client.create_registered_model(
            name, description="prizeflow ALS rating predictor (bias-aware ALS on Spark MLlib).")
    # register_model prints "Registered model ... already exists" for the model created above.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(candidate.model_uri, name, tags=candidate.version_tags())
    client.update_model_version(name, version.version, candidate.description())
    return version


def _summary(name: str, version, alias: str | None, candidate: Candidate,
             best_before: float | None, champion, rescored: bool, already: bool = False,
             gate: str | None = None) -> dict[str, Any]:
    run = candidate.run
    return {"model_name": name, "version": int(version.version),
            "alias": alias if alias in (CHAMPION, CHALLENGER) else None, "gate": gate or alias,
            "already_registered": already, "test_rmse": candidate.test_rmse,
            "champion_rmse_before": best_before,
            "champion_version_before": int(champion.version) if champion else None,
            "champion_rescored": rescored, "lift_pct": candidate.lift_pct,
            "train_run_id": run.info.run_id,
            "data_version": int(run.data.params["data_version"])}
