"""The MLflow record of a ``prizeflow train`` run: the one place that writes it and reads it.

:mod:`prizeflow.training` writes a run only through the ``log_*`` functions here; the registry,
the exploration notebook and the tests read one only through :class:`TrainRun`, so a name is
spelt once. A train run holds:

- tags: ``prizeflow.command`` = ``train``, the code's commit, the data path, the split's
  signature, the model's URI, the scheduler's run id when there is one, the Spark ML form's
  URI and terms when it is logged, and ``baseline_left_out_<name>``: why a baseline's lift is
  not shown (Cinematch's, unless the test set is the Prize's probe:
  :mod:`prizeflow.prize_probe`);
- params: the gate's record (:mod:`prizeflow.gate`), the data and split (``data_version``,
  ``split_method``, ``probe_version``, ``qualifying_version``, ``ingest_id``, ``split_*``), the
  grid's size and
  parallelism, the chosen point (``best_*``), the baseline's and the blend's settings and
  weights, and the model's digest (:mod:`prizeflow.model_integrity`);
- metrics: each split part's ratings, validation and test errors of the model and its parts,
  ``baseline_rmse_<name>`` and ``lift_pct_<name>`` per baseline, the grid's seconds, the model's
  bytes; ``test_{precision,recall,ndcg}_at_10`` and ``popularity_*`` beside them over
  ``ranking_users`` sampled test users (:mod:`prizeflow.ranking`);
- artifacts: ``config.yaml`` (the resolved config), ``stages.json``, ``plots/``, the model;
- one child run per grid point: the point's params and ``iterations_run``; ``validation_rmse``
  and ``fit_seconds``; whether halving pruned it.

A ``prizeflow blend`` run (:func:`log_blend`, ``prizeflow.command`` = ``blend``) is read the
same way: it copies its first member's gate record, data params, data tags and config, and adds
``prizeflow.blend_of`` (the versions), ``member_run_v<N>``, its weights and its own errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from prizeflow import plots
from prizeflow.columns import PREDICTION
from prizeflow.errors import JobError
from prizeflow.grid import GridPoint, PointResult
from prizeflow.metrics import Errors
from prizeflow.secrets import redact_text

COMMAND_TAG, TRAIN = "prizeflow.command", "train"
# A blend of registered versions (:mod:`prizeflow.blending`) is recorded as a train run of its
# own kind: the same gate record, data params and metrics, and the versions it blends.
BLEND = "blend"
BLEND_OF_TAG = "prizeflow.blend_of"
PIPELINE_RUN_TAG = "prizeflow.pipeline_run"
GIT_COMMIT_TAG = "prizeflow.git_commit"
DATA_PATH_TAG = "prizeflow.data_path"
SPLIT_TAG = "prizeflow.split"
MODEL_URI_TAG = "prizeflow.model_uri"
SPARK_MODEL_URI_TAG = "prizeflow.spark_model_uri"
SPARK_MODEL_TERMS_TAG = "prizeflow.spark_model_terms"
PARENT_TAG = "mlflow.parentRunId"
PRUNED_TAG, POINT_TAG = "prizeflow.pruned", "prizeflow.point"
CONFIG_ARTIFACT, STAGES_ARTIFACT = "config.yaml", "stages.json"
BEST_PREFIX, BASELINE_PREFIX, LIFT_PREFIX = "best_", "baseline_rmse_", "lift_pct_"
LEFT_OUT_PREFIX = "baseline_left_out_"  # tag: why a baseline's lift is not shown
# The test errors of the model's predictions, by the name train scores them under.
TEST_METRICS = {PREDICTION: "test_rmse", "prediction_without_history":
                "test_rmse_without_history", "prediction_als": "test_rmse_als"}


class TrainRunError(JobError):
    """No train run to work with, or a run that is not one; the message says which."""


# --- writing (inside the active run that ``training.train`` started) ---------------------------

def log_start(git_commit: str, data_path: str, split_signature: str,
              pipeline_run: str | None) -> None:
    """The run's tags (the data path with any credentials masked)."""
    mlflow.set_tags({COMMAND_TAG: TRAIN, GIT_COMMIT_TAG: git_commit,
                     DATA_PATH_TAG: redact_text(data_path),
                     SPLIT_TAG: split_signature,
                     **({PIPELINE_RUN_TAG: pipeline_run} if pipeline_run is not None else {})})


def log_inputs(dataset, gate_params: dict[str, Any], data_params: dict[str, Any],
               counts: dict[str, int], config_text: str) -> None:
    """The data the run reads: the dataset input, the gate's record and the data params (both
    immutable), each part's size and the resolved config."""
    mlflow.log_input(dataset, context="training")
    mlflow.log_params(gate_params)
    mlflow.log_params(data_params)
    mlflow.log_metrics({f"{name}_ratings": float(count) for name, count in counts.items()})
    mlflow.log_text(config_text, CONFIG_ARTIFACT)


def log_point(client: MlflowClient, experiment_id: str, parent_run_id: str,
              result: PointResult, index: int) -> str:
    """One finished grid point as a child run of the training run (through the client, from
    the main thread: the fluent API's thread-local active run never matters)."""
    now = int(time.time() * 1000)
    run = client.create_run(
        experiment_id, start_time=now - int(result.seconds * 1000),
        run_name=f"point-{index:03d}",
        tags={PARENT_TAG: parent_run_id, PRUNED_TAG: str(result.pruned).lower()})
    params = {**result.point.params(), "iterations_run": result.iterations}
    client.log_batch(run.info.run_id,
                     params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric("validation_rmse", result.validation_rmse, now, 0),
                              Metric("fit_seconds", result.seconds, now, 0)],
                     tags=[RunTag(POINT_TAG, result.point.label())])
    client.set_terminated(run.info.run_id, end_time=now)
    return run.info.run_id


def log_outcome(chosen: PointResult, settings: dict[str, Any], test: dict[str, Errors],
                baseline_rmse: dict[str, float], lift: dict[str, float],
                figures: dict[str, Any], validation_blend_rmse: float | None = None,
                **measures: float) -> None:
    """The chosen point, the settings the final model was built with, its test errors against
    the baselines, the figures (artifact name -> matplotlib figure) and further ``measures``
    (grid_seconds, model_bytes)."""
    model = test[PREDICTION]
    mlflow.log_params({**{f"{BEST_PREFIX}{k}": v for k, v in chosen.point.params().items()},
                       **settings})
    mlflow.log_metrics({
        "validation_rmse": chosen.validation_rmse,
        **({"validation_rmse_blend": validation_blend_rmse}
           if validation_blend_rmse is not None else {}),
        **{metric: test[name].rmse for name, metric in TEST_METRICS.items()},
        "test_mae": model.mae, "test_ratings": float(model.count),
        **{name: float(value) for name, value in measures.items()},
        **{f"{BASELINE_PREFIX}{k}": v for k, v in baseline_rmse.items()},
        **{f"{LIFT_PREFIX}{k}": v for k, v in lift.items()}})
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        plots.close(figure)  # pyplot keeps every figure it made until it is closed


def outcome_figures(results: list[PointResult], test_rmse: float,
                    baseline_rmse: dict[str, float], model_name: str) -> dict[str, Any]:
    """The run's plots by artifact name: the grid per kind, the model against the baselines."""
    figures = {f"plots/grid_{kind}.png": plots.grid_heatmap(results, kind)
               for kind in sorted({r.point.kind for r in results})}
    figures["plots/model_vs_baselines.png"] = plots.model_vs_baselines(test_rmse, baseline_rmse,
                                                                      model_name)
    return figures


def log_left_out(left_out: dict[str, str]) -> None:
    """Each baseline the run does not compare with, and why, as a tag."""
    mlflow.set_tags({f"{LEFT_OUT_PREFIX}{name}": why for name, why in left_out.items()})


def log_ranking(figures: dict[str, dict[str, float]]) -> None:
    """Top-10 quality (:mod:`prizeflow.ranking`): ``test_<figure>`` for the model,
    ``popularity_<figure>`` beside it, and ``ranking_users``."""
    if not figures:
        return
    prefixes = {"model": "test_", "popularity": "popularity_"}
    mlflow.log_metrics({
        "ranking_users": float(figures["model"]["users"]),
        **{f"{prefixes[who]}{name}": value for who, values in figures.items()
           for name, value in values.items() if name != "users"}})


def log_model_uri(uri: str) -> None:
    mlflow.set_tag(MODEL_URI_TAG, uri)


def log_spark_model(uri: str, terms: str) -> None:
    mlflow.set_tags({SPARK_MODEL_URI_TAG: uri, SPARK_MODEL_TERMS_TAG: terms})


def log_stages(stages: list[dict[str, Any]]) -> None:
    mlflow.log_dict({"stages": stages}, STAGES_ARTIFACT)


def log_blend(member: "TrainRun", versions: tuple[int, ...], weights: dict[str, float],
              metrics: dict[str, float], baselines: dict[str, float],
              left_out: dict[str, str], member_runs: dict[int, str]) -> None:
    """A blend run's record (inside the active run): the tags, the gate record and data params
    of the member it shares its test set with (so the gate and the re-scoring read it as they
    read a train run), its own weights and errors, and ``member``'s resolved config."""
    import mlflow.artifacts

    tags = member.run.data.tags
    mlflow.set_tags({COMMAND_TAG: BLEND, GIT_COMMIT_TAG: tags.get(GIT_COMMIT_TAG, "unknown"),
                     DATA_PATH_TAG: tags.get(DATA_PATH_TAG, ""), SPLIT_TAG: tags.get(SPLIT_TAG, ""),
                     BLEND_OF_TAG: ",".join(str(v) for v in versions),
                     **{f"{LEFT_OUT_PREFIX}{k}": why for k, why in left_out.items()}})
    shared = {k: v for k, v in member.params.items()
              if (k.startswith("gate.") and k != "gate.test_rmse")
              or k in ("data_version", "split_method", "probe_version", "qualifying_version",
                       "ingest_id")
              or k.startswith("split_")}
    mlflow.log_params({**shared, "refit": False, "blend_versions": ",".join(map(str, versions)),
                       **{f"member_run_v{v}": run_id for v, run_id in member_runs.items()},
                       **weights})
    mlflow.log_metrics({**metrics, **{f"{BASELINE_PREFIX}{k}": v for k, v in baselines.items()}})
    mlflow.log_text(mlflow.artifacts.load_text(f"runs:/{member.run_id}/{CONFIG_ARTIFACT}"),
                    CONFIG_ARTIFACT)


# --- reading ------------------------------------------------------------------------------------

def _int_or_none(text: str | None) -> int | None:
    return None if text in (None, "", "None") else int(text)


@dataclass(frozen=True)
class TrainRun:
    """A train run as read back from MLflow."""

    run: Run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self.run.info.experiment_id

    @property
    def params(self) -> dict[str, str]:
        return self.run.data.params

    @property
    def test_rmse(self) -> float:
        return self.run.data.metrics["test_rmse"]

    def _prefixed(self, prefix: str) -> dict[str, float]:
        return {k[len(prefix):]: v for k, v in sorted(self.run.data.metrics.items())
                if k.startswith(prefix)}

    @property
    def baselines(self) -> dict[str, float]:
        """Baseline name -> its test RMSE."""
        return self._prefixed(BASELINE_PREFIX)

    @property
    def lift_pct(self) -> dict[str, float]:
        """Baseline name -> the model's lift over it, percent."""
        return self._prefixed(LIFT_PREFIX)

    @property
    def baselines_left_out(self) -> dict[str, str]:
        """Baseline name -> why the run does not compare with it."""
        return {k[len(LEFT_OUT_PREFIX):]: v for k, v in sorted(self.run.data.tags.items())
                if k.startswith(LEFT_OUT_PREFIX)}

    @property
    def best_params(self) -> dict[str, str]:
        return {k[len(BEST_PREFIX):]: v for k, v in sorted(self.params.items())
                if k.startswith(BEST_PREFIX)}

    @property
    def data_version(self) -> int:
        return int(self.params["data_version"])

    @property
    def probe_version(self) -> int | None:
        return _int_or_none(self.params.get("probe_version"))

    @property
    def refit(self) -> bool:
        return self.params.get("refit", "True") == "True"

    @property
    def git_commit(self) -> str:
        return self.run.data.tags.get(GIT_COMMIT_TAG, "unknown")

    @property
    def pipeline_run(self) -> str | None:
        return self.run.data.tags.get(PIPELINE_RUN_TAG)

    @property
    def blend_of(self) -> tuple[int, ...]:
        """The registered versions a blend run blends; () for a train run."""
        text = self.run.data.tags.get(BLEND_OF_TAG, "")
        return tuple(int(v) for v in text.split(",") if v)

    @property
    def model_uri(self) -> str | None:
        return self.run.data.tags.get(MODEL_URI_TAG) or None

    def config(self) -> dict[str, Any]:
        """The resolved config the run was trained with (its ``config.yaml``)."""
        import mlflow.artifacts
        import yaml

        return yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{self.run_id}/{CONFIG_ARTIFACT}"))

    def points(self, client: MlflowClient) -> list[PointResult]:
        """Every grid point's result (its child runs), best validation RMSE first."""
        children = client.search_runs([self.experiment_id],
                                      f"tags.`{PARENT_TAG}` = '{self.run_id}'")
        results = [PointResult(point=GridPoint.from_params(child.data.params),
                               iterations=int(child.data.params.get("iterations_run", 0)),
                               validation_rmse=child.data.metrics["validation_rmse"],
                               seconds=child.data.metrics.get("fit_seconds", 0.0),
                               pruned=child.data.tags.get(PRUNED_TAG) == "true")
                   for child in children]
        return sorted(results, key=lambda r: r.validation_rmse)


def get(client: MlflowClient, run_id: str) -> TrainRun:
    """Train run ``run_id``; an error unless it is a finished train run."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrainRunError(f"run {run_id} not found: {exc.message}") from exc
    if run.data.tags.get(COMMAND_TAG) not in (TRAIN, BLEND):
        raise TrainRunError(f"run {run_id} is not a `prizeflow train` or `prizeflow blend` run")
    if run.info.status != "FINISHED":
        raise TrainRunError(f"run {run_id} did not finish (status {run.info.status})")
    return TrainRun(run)


def latest(client: MlflowClient, experiment_id: str, pipeline_run: str | None = None) -> TrainRun:
    """The latest finished train run, or with ``pipeline_run`` the latest one tagged with it (a
    scheduler's run id: the DAG registers the run its own train task made)."""
    query = f"tags.`{COMMAND_TAG}` = '{TRAIN}' and attributes.status = 'FINISHED'"
    if pipeline_run is not None:
        if "'" in pipeline_run or "\\" in pipeline_run:
            raise TrainRunError(f"--pipeline-run {pipeline_run!r}: quotes and backslashes are "
                                "not allowed")
        query += f" and tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}'"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        which = f" of pipeline run {pipeline_run!r}" if pipeline_run is not None else ""
        raise TrainRunError(f"no finished `prizeflow train` run{which} in the experiment: "
                            "train first")
    return TrainRun(runs[0])
