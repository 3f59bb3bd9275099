"""MLflow tracking for the jobs: experiment set-up, child runs for grid points, plots, the model.

Grid-point runs are created with an explicit parent (``mlflow.parentRunId``) through
``MlflowClient`` from the main thread, so the fluent API's thread-local active run never matters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from prizeflow.config import Config, MlflowSettings
from prizeflow.errors import JobError
from prizeflow.grid import PointResult
from prizeflow.secrets import redact_text

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
# Baselines that are published constants, not measured on the run's data.
PUBLISHED_BASELINES = frozenset({"cinematch"})


def local_store_file(uri: str | None) -> Path | None:
    """The SQLite file or the folder of a local MLflow store, None for a server."""
    if not uri:
        return None
    if uri.startswith("sqlite:///"):
        # sqlite:///rel.db -> rel.db; sqlite:////abs.db -> /abs.db
        return Path(uri[len("sqlite:///"):]).absolute()
    if uri.startswith("file:"):
        return Path(urlparse(uri).path).absolute()
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).absolute()
    return None


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite store (``<dir>/mlartifacts``) rather than in the CWD."""
    if tracking_uri.startswith("sqlite:///"):
        return (local_store_file(tracking_uri).resolve().parent / "mlartifacts").as_uri()
    return None


def registry_uri(settings: MlflowSettings) -> str | None:
    """The registry to use, or None to keep MLflow's default for the tracking store."""
    if settings.registry_uri:
        return settings.registry_uri
    if settings.tracking_uri.startswith("databricks"):
        return None  # MLflow 3 defaults to Unity Catalog (databricks-uc) there
    return settings.tracking_uri


def check_reachable(config: Config) -> None:
    """Fail in seconds, naming the URI (without its credentials), when an HTTP tracking or
    registry server does not answer; and keep MLflow's own retries short. Any HTTP answer counts:
    a 401 or a 404 still says the server is there."""
    import requests

    settings = config.mlflow
    bound_http_calls(settings)
    checked = set()
    for role, uri in (("tracking", settings.tracking_uri), ("registry", registry_uri(settings))):
        if not uri or not uri.startswith(("http://", "https://")) or uri in checked:
            continue
        checked.add(uri)
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=settings.timeout_seconds)
        except requests.RequestException as exc:
            raise JobError(f"MLflow {role} server {redact_text(uri)} did not answer within "
                           f"{settings.timeout_seconds:g} s ({type(exc).__name__}); "
                           "is it running, and is mlflow.tracking_uri right?") from None


def bound_http_calls(settings: MlflowSettings) -> None:
    """Every MLflow HTTP call waits at most ``mlflow.timeout_seconds`` for each answer (MLflow's
    own default is 120 s), and is tried at most 4 times with 1-2-4 s back-off (its default is
    7 tries with minutes of back-off): a server that accepts connections but hangs fails a call
    within 4 x timeout + 7 s. The environment is MLflow's only switch for this."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(settings.timeout_seconds)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def configure(config: Config, create: bool = True) -> str | None:
    """Point MLflow at the configured store and return the experiment id: created if new, or
    None when it does not exist and ``create`` is false."""
    settings = config.mlflow
    bound_http_calls(settings)
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    registry = registry_uri(settings)
    if registry is not None:
        mlflow.set_registry_uri(registry)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    location = settings.artifact_location or default_artifact_location(uri)
    logger.info("creating MLflow experiment %s (artifacts: %s)", settings.experiment,
                location or "server default")
    return client.create_experiment(settings.experiment, artifact_location=location)


def git_commit() -> str:
    """The commit of the code that is running, or 'unknown' outside a git checkout."""
    if os.environ.get("PRIZEFLOW_GIT_COMMIT"):
        return os.environ["PRIZEFLOW_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def log_point(client: MlflowClient, experiment_id: str, parent_run_id: str,
              result: PointResult, index: int) -> str:
    """One finished grid point as a child run of the training run."""
    now = int(time.time() * 1000)
    run = client.create_run(
        experiment_id, start_time=now - int(result.seconds * 1000),
        run_name=f"point-{index:03d}",
        tags={"mlflow.parentRunId": parent_run_id, "prizeflow.pruned": str(result.pruned).lower()})
    params = {**result.point.params(), "iterations_run": result.iterations}
    client.log_batch(run.info.run_id,
                     params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric("validation_rmse", result.validation_rmse, now, 0),
                              Metric("fit_seconds", result.seconds, now, 0)],
                     tags=[RunTag("prizeflow.point", result.point.label())])
    client.set_terminated(run.info.run_id, end_time=now)
    return run.info.run_id


def grid_heatmap(results: list[PointResult], kind: str):
    """Validation RMSE over rank x reg_param (the best over the other axes) for one kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    chosen = [r for r in results if r.point.kind == kind]
    ranks = sorted({r.point.rank for r in chosen})
    regs = sorted({r.point.reg_param for r in chosen})
    grid = np.full((len(ranks), len(regs)), np.nan)
    for r in chosen:
        i, j = ranks.index(r.point.rank), regs.index(r.point.reg_param)
        grid[i, j] = np.nanmin([grid[i, j], r.validation_rmse])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(regs), 1.2 + 0.7 * len(ranks)))
    image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(regs)), [f"{v:g}" for v in regs])
    ax.set_yticks(range(len(ranks)), [str(v) for v in ranks])
    ax.set_xlabel("regParam")
    ax.set_ylabel("rank")
    ax.set_title(f"validation RMSE ({kind} ALS)")
    for i in range(len(ranks)):
        for j in range(len(regs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center",
                        color=_text_colour(image.cmap(image.norm(grid[i, j]))), fontsize=8)
    fig.colorbar(image, ax=ax, label="validation RMSE (lower is better)")
    fig.tight_layout()
    return fig


def relative_luminance(rgba) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components 0..1)."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in rgba[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _text_colour(rgba) -> str:
    """Black or white, whichever contrasts more with the cell (at least 4.58:1 either way)."""
    luminance = relative_luminance(rgba)
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def model_vs_baselines(test_rmse: float, baselines: dict[str, float], model_name: str = "model"):
    """Test RMSE of the model and each baseline, from zero so bar heights compare honestly;
    a published figure (Cinematch) is hatched and labelled as such, not drawn as a measurement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [model_name] + [f"{n}\n(published)" if n in PUBLISHED_BASELINES else n
                            for n in baselines]
    values = [test_rmse, *baselines.values()]
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(names), 3.5))
    bars = ax.bar(names, values, color=["tab:green"] + ["tab:gray"] * len(baselines))
    for bar, name in zip(bars[1:], baselines):
        if name in PUBLISHED_BASELINES:
            bar.set(facecolor="white", edgecolor="tab:gray", hatch="//")
    ax.bar_label(bars, fmt="%.4f")
    ax.set_ylabel("test RMSE")
    ax.set_ylim(0, max(values) * 1.12)
    ax.set_title("model vs baselines (lower is better)")
    fig.tight_layout()
    return fig


def pip_requirements() -> list[str]:
    """The pyfunc's serving requirements, given explicitly (inference costs ~40 s a model)."""
    from importlib.metadata import version

    return [f"mlflow=={version('mlflow')}", f"numpy=={version('numpy')}",
            f"pandas=={version('pandas')}"]


@contextlib.contextmanager
def package_source():
    """A directory holding the prizeflow package, for a model's ``code_paths``.

    On a cluster the code often comes from a zip (spark-submit --py-files) that MLflow cannot
    copy from; the package is then extracted to a temporary directory for the duration."""
    if PACKAGE_DIR.is_dir():
        yield PACKAGE_DIR
        return
    archive = next((p for p in PACKAGE_DIR.parents if p.is_file()), None)
    if archive is None or not zipfile.is_zipfile(archive):
        raise FileNotFoundError(f"cannot find the prizeflow package source at {PACKAGE_DIR}")
    inner = PACKAGE_DIR.relative_to(archive).as_posix() + "/"
    with tempfile.TemporaryDirectory(prefix="prizeflow-code-") as tmp, \
            zipfile.ZipFile(archive) as bundle:
        target = Path(tmp) / PACKAGE_DIR.name
        for member in bundle.namelist():
            if member.startswith(inner) and not member.endswith("/"):
                destination = target / member[len(inner):]
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(bundle.read(member))
        yield target


def log_factor_model(factor_model, name: str = "model"):
    """Log the Spark-free pyfunc into the active run; returns MLflow's ModelInfo."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    from prizeflow.pyfunc import ARTIFACT_KEY, HISTORY_MOVIES, HISTORY_RATINGS

    # Declared, not inferred: ids are longs (int32 input is a safe widening), output a double;
    # the user's history is optional (the neighbourhood term needs it).
    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "movie_id"),
                       ColSpec(Array(DataType.long), HISTORY_MOVIES, required=False),
                       ColSpec(Array(DataType.double), HISTORY_RATINGS, required=False)]),
        outputs=Schema([ColSpec("double", "prediction")]))
    example = pd.DataFrame({"user_id": factor_model.user_ids[:2].astype("int64"),
                            "movie_id": factor_model.movie_ids[:2].astype("int64")})
    with tempfile.TemporaryDirectory(prefix="prizeflow-model-") as tmp, \
            package_source() as code, warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: ids never are missing.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        path = Path(tmp) / "factors.npz"
        factor_model.save(path)
        # From code, not a pickled instance: loading runs only the package's own code.
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(code / "served_model.py"),
            artifacts={ARTIFACT_KEY: str(path)}, code_paths=[str(code)], signature=signature,
            input_example=example, pip_requirements=pip_requirements())


def log_spark_model(pipeline, dfs_tmpdir: str, name: str = "spark-model"):
    """Log the Spark ML pipeline into the active run (requirements given: inference is slow)."""
    import mlflow.spark
    from importlib.metadata import version

    return mlflow.spark.log_model(
        pipeline, artifact_path=name, dfs_tmpdir=dfs_tmpdir,
        pip_requirements=[f"pyspark=={version('pyspark')}", f"mlflow=={version('mlflow')}"])
