"""The MLflow Model Registry side: find a training run, register its model, gate the champion.

:func:`register` is what ``prizeflow register`` runs; :func:`load_model` is how batch scoring
gets a registered version's model.

Aliases, not stages (deprecated in MLflow 3): ``champion`` is the model to serve, ``challenger``
the latest version that did not beat it. The gate reads what each train run recorded in its
immutable params (:mod:`prizeflow.gate`): the exact test RMSE and a hash of the exact test set.
Two runs with the same test set compare their RMSEs; otherwise the champion is re-scored on the
data the candidate was trained on (its own lake, found from the run, never from the register's
working folder), and a register is refused when that data cannot be read. Version tags (test
RMSE, lift, data version, split) are for people; the gate never reads them. A version's
``prizeflow.gate`` tag is written last: a version without it was left half-registered by a
crash, and the next ``register`` of the same run completes it; two registers of one run that
race on a tracking server keep the lower-numbered version.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from prizeflow import gate, model_integrity, train_runs
from prizeflow.columns import MOVIE_ID, RATED_ON, RATING, USER_ID
from prizeflow.config import Config
from prizeflow.errors import JobError, first_line
from prizeflow.factors import FactorModel
from prizeflow.model_blend import BlendedModel
from prizeflow.secrets import redact_text
from prizeflow.train_runs import TrainRun, TrainRunError

if TYPE_CHECKING:  # the served pyfunc imports this module; it needs no Spark
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
BELOW_BASELINE = "below_baseline"  # registered without an alias: worse than its bias baseline
GATE_TAG = "prizeflow.gate"


class RegistryError(TrainRunError):
    """No run or model to work with; the message says what is missing."""


@dataclass(frozen=True)
class Candidate:
    train_run: TrainRun
    record: gate.Record

    @classmethod
    def of(cls, run: TrainRun) -> "Candidate":
        record = gate.record_of(run.run)
        if record is None:
            raise RegistryError(f"train run {run.run_id} has no gate record (its gate.* "
                                "params): an earlier prizeflow trained it; train again")
        return cls(run, record)

    @property
    def run_id(self) -> str:
        return self.train_run.run_id

    @property
    def test_rmse(self) -> float:
        return self.record.test_rmse

    @property
    def model_uri(self) -> str:
        uri = self.train_run.model_uri
        if not uri:
            raise RegistryError(f"run {self.run_id} logged no model")
        return uri

    def version_tags(self) -> dict[str, str]:
        run = self.train_run
        # The exact value (repr round-trips a float); the gate reads the run's metric anyway.
        out = {"test_rmse": repr(self.test_rmse), "train_run_id": run.run_id,
               "data_version": run.params.get("data_version", ""),
               "split": self.record.split, "git_commit": run.git_commit}
        out.update({f"lift_pct_{k}": f"{v:.3f}" for k, v in run.lift_pct.items()})
        out.update({f"lift_left_out_{k}": why for k, why in run.baselines_left_out.items()})
        out.update({f"best_{k}": v for k, v in run.best_params.items()})
        if run.blend_of:
            out["blend_of"] = ",".join(str(v) for v in run.blend_of)
        return out

    def description(self) -> str:
        run = self.train_run
        if run.blend_of:
            return (f"Blend of versions {', '.join(f'v{v}' for v in run.blend_of)} on ratings "
                    f"Delta version {run.params.get('data_version')}: test RMSE "
                    f"{self.test_rmse:.4f}. Blend run {run.run_id}.")
        best = ", ".join(f"{k}={v}" for k, v in run.best_params.items())
        lift = ", ".join(f"{v:+.2f}% vs {k}" for k, v in run.lift_pct.items())
        left_out = "".join(f" No lift vs {k}: {why}." for k, why in run.baselines_left_out.items())
        return (f"ALS ({best}) trained on ratings Delta version {run.params.get('data_version')}: "
                f"test RMSE {self.test_rmse:.4f}; lift {lift}.{left_out} Train run {run.run_id}.")


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


def champion_record(client: MlflowClient, champion) -> gate.Record | None:
    """The gate record of the train run the champion came from (None: that run has none, and
    the champion is re-scored)."""
    run_id = champion.tags.get("train_run_id")
    try:
        return gate.record_of(client.get_run(run_id))
    except (MlflowException, TypeError) as exc:
        raise RegistryError(f"cannot read the train run {run_id} of champion "
                            f"v{champion.version}: {_first_line(exc)}") from exc


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
    """The version already registered from train run ``run_id`` (the lowest-numbered one, should
    two registers have raced), or None."""
    versions = _unless_missing(lambda: client.search_model_versions(f"name = '{name}'"),
                               f"the versions of {name!r}") or []
    same = [v for v in versions if v.tags.get("train_run_id") == run_id]
    return min(same, key=lambda v: int(v.version)) if same else None


def load_model(name: str, alias: str):
    """(model, version) of ``models:/<name>@<alias>``, its files verified against the digest
    register recorded (:mod:`prizeflow.model_integrity`); MLflow must be configured. The model
    is a FactorModel, or a BlendedModel for a registered blend."""
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"no model version of {name!r} has alias {alias!r}: "
                            "run `prizeflow register` first") from exc
    return load_version(name, version), int(version.version)


def load_version(name: str, version) -> FactorModel | BlendedModel:
    """The model of registered ``version`` (an MLflow ModelVersion of ``name``), verified."""
    return model_integrity.load_verified(name, version).unwrap_python_model().model


def candidate_lake_root(config: Config, candidate: Candidate) -> str:
    """The lake the candidate was trained on: the root its run recorded when nothing in it was
    masked, else ``lake.root`` if that is the same lake (same hash of the exact root)."""
    from prizeflow import lake

    record = candidate.record
    if record.lake_root_is_exact:
        return record.lake_root
    root = lake.absolute_root(config.lake.root)
    if record.same_lake(root):
        return config.lake.root
    raise RegistryError(f"train run {candidate.run_id} was trained on the lake "
                        f"{record.lake_root}, and lake.root {redact_text(root)} is another "
                        "lake: set lake.root to the run's lake to read its data")


def candidate_split(spark: SparkSession, config: Config, candidate: Candidate):
    """The split ratings (:func:`prizeflow.data.split_ratings`) the candidate run was trained
    and tested on, read from the lake it was trained on, and that ingest's pairs rated without
    a known rating (:func:`prizeflow.data.unrated_pairs`, or None); a RegistryError when that
    data cannot be read or is not what the candidate read."""
    from pyspark.errors import PySparkException

    from prizeflow import data, lake
    from prizeflow.config import DataSettings, LakeSettings, SplitSettings

    run = candidate.train_run
    root = candidate_lake_root(config, candidate)
    scoring_config = config.model_copy(update={
        "lake": LakeSettings(root=root),
        "split": SplitSettings.model_validate(run.config()["split"]),
        "data": DataSettings(version=run.data_version, probe_version=run.probe_version)})
    try:
        source = data.load_training_data(spark, scoring_config)
        table = lake.table_id(spark, source.ratings_path)
    except (JobError, PySparkException) as exc:
        raise RegistryError(f"cannot read the data train run {run.run_id} was trained on "
                            f"(lake {redact_text(root)}): {first_line(str(exc))}; nothing was "
                            "registered") from exc
    if table != candidate.record.ratings_table:
        raise RegistryError(f"the ratings table in lake {redact_text(root)} is not the one train "
                            f"run {run.run_id} read (table id {table}, the run's "
                            f"{candidate.record.ratings_table}): the lake was re-created; "
                            "nothing was registered")
    method = data.choose_split_method(scoring_config, source)
    return data.split_ratings(source, scoring_config, method), source.unrated


def rescore_champion(spark: SparkSession, config: Config, candidate: Candidate,
                     name: str) -> float:
    """The champion's RMSE on the candidate run's test set, scored in Spark by the champion's
    own rule with each user's history taken from the candidate's training ratings and the
    unrated pairs (what the candidate's own test RMSE was scored with), read from the lake the
    candidate was trained on (:func:`candidate_split`)."""
    from prizeflow import blend_scoring, data, partitions, scoring, splits

    split, unrated = candidate_split(spark, config, candidate)
    history_parts = [splits.TRAIN]
    if candidate.train_run.refit:
        history_parts.append(splits.VALIDATION)
    # rated_on: a champion with time effects scores each rating at its day.
    history = data.with_unrated(
        splits.part(split, *history_parts).select(USER_ID, MOVIE_ID, RATING, RATED_ON), unrated)
    test = splits.part(split, splits.TEST).select(USER_ID, MOVIE_ID, RATING, RATED_ON)
    champion, _ = load_model(name, CHAMPION)
    if isinstance(champion, BlendedModel):
        return blend_scoring.test_rmse(champion, test, history, partitions.parallelism(spark))
    return scoring.test_rmse(champion, test, history, partitions.parallelism(spark))


def register(spark: SparkSession | None, config: Config, run_id: str | None = None,
             pipeline_run: str | None = None) -> dict[str, Any]:
    """Register the model of train run ``run_id`` (None: the latest finished one, of
    ``pipeline_run`` when given) and gate it against the champion; the summary. Spark
    (``spark``, else a session from the config) starts only when the champion must be re-scored
    on a different test set. Registering a run again returns its version (completing a
    registration a crash cut short)."""
    from prizeflow import tracking

    experiment_id = tracking.configure(config, create=False)
    experiment = config.mlflow.experiment
    if experiment_id is None:
        raise RegistryError(f"no MLflow experiment {experiment!r}: run `prizeflow train` first")
    client = MlflowClient()
    name = config.mlflow.registered_model
    run = (train_runs.get(client, run_id) if run_id
           else train_runs.latest(client, experiment_id, pipeline_run))
    if run.experiment_id != experiment_id:
        raise RegistryError(f"run {run.run_id} belongs to experiment "
                            f"{run.experiment_id}, not {experiment!r} ({experiment_id})")
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


def _gate_and_register(client: MlflowClient, config: Config, name: str, run: TrainRun,
                       spark: SparkSession | None) -> dict[str, Any]:
    candidate = Candidate.of(run)
    version = registered_version(client, name, run.run_id)
    if version is not None and version.tags.get(GATE_TAG):
        # What it holds now: a later champion may have taken its alias since.
        current = client.get_model_version(name, version.version)
        held = [a for a in (current.aliases or []) if a in (CHAMPION, CHALLENGER)]
        logger.info("train run %s is already registered as %s v%s (%s)", run.run_id, name,
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
        bias = run.baselines.get("bias")
        if bias is not None and candidate.test_rmse >= bias:
            logger.warning("train run %s has test RMSE %.5f, not better than its own bias "
                           "baseline %.5f: registered without an alias", run.run_id,
                           candidate.test_rmse, bias)
            alias = BELOW_BASELINE
    if version is None:
        version = _create_version(client, name, candidate)
        first = _first_version_of_run(client, name, run.run_id, version)
        if int(first.version) != int(version.version):
            # Another register of this run (on a server, where no lock is taken) created a
            # version first: it gates that one.
            return _summary(name, first, None, candidate, None, None, False, already=True,
                            gate=first.tags.get(GATE_TAG) or "pending")
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


def _first_version_of_run(client: MlflowClient, name: str, run_id: str, mine):
    """The lowest-numbered version registered from ``run_id``; ``mine`` is deleted when another
    register of the same run created an earlier one (MLflow has no create-if-absent)."""
    first = registered_version(client, name, run_id) or mine
    if int(first.version) != int(mine.version):
        logger.warning("another register of train run %s created %s v%s first: v%s is deleted",
                       run_id, name, first.version, mine.version)
        client.delete_model_version(name, mine.version)
    return first


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
    record = champion_record(client, champion)
    if record is not None and record.split == candidate.record.split:
        return record.test_rmse, False
    from pyspark.sql import SparkSession

    from prizeflow.spark import get_spark, release

    # A lake that cannot be the candidate's is refused before any Spark work.
    candidate_lake_root(config, candidate)
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
    # The model as train logged it, or nothing: its files must still have the digest train
    # recorded in the run's (immutable) params.
    digest = model_integrity.digest_of(candidate.model_uri)
    model_integrity.check(candidate.train_run.params.get(model_integrity.DIGEST_PARAM), digest,
                          f"the model of train run {candidate.run_id}",
                          unrecorded="an earlier prizeflow trained it; train again")
    tags = {**candidate.version_tags(), model_integrity.DIGEST_TAG: digest}
    # register_model prints "Registered model ... already exists" for the model created above.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(candidate.model_uri, name, tags=tags)
    client.update_model_version(name, version.version, candidate.description())
    return version


def _summary(name: str, version, alias: str | None, candidate: Candidate,
             best_before: float | None, champion, rescored: bool, already: bool = False,
             gate: str | None = None) -> dict[str, Any]:
    run = candidate.train_run
    return {"model_name": name, "version": int(version.version),
            "alias": alias if alias in (CHAMPION, CHALLENGER) else None, "gate": gate or alias,
            "already_registered": already, "test_rmse": candidate.test_rmse,
            "champion_rmse_before": best_before,
            "champion_version_before": int(champion.version) if champion else None,
            "champion_rescored": rescored, "lift_pct": run.lift_pct,
            "baselines_left_out": run.baselines_left_out, "train_run_id": run.run_id, "data_version": run.data_version}
