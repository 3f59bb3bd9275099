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
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient

from prizeflow.columns import MOVIE_ID, PREDICTION, RATED_ON, USER_ID
from prizeflow.config import Config, MlflowSettings
from prizeflow.errors import JobError
from prizeflow.secrets import redact_text

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent


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


def _pyfunc_signature():
    """Declared, not inferred: ids are longs (int32 input is a safe widening), output a double;
    the user's history is optional (the neighbourhood term needs it), and so are the dates (a
    model with time effects reads them; MLflow drops columns a signature does not name)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    from prizeflow.pyfunc import HISTORY_DATES, HISTORY_MOVIES, HISTORY_RATINGS

    return ModelSignature(
        inputs=Schema([ColSpec("long", USER_ID), ColSpec("long", MOVIE_ID),
                       ColSpec(Array(DataType.long), HISTORY_MOVIES, required=False),
                       ColSpec(Array(DataType.double), HISTORY_RATINGS, required=False),
                       ColSpec(DataType.datetime, RATED_ON, required=False),
                       ColSpec(Array(DataType.datetime), HISTORY_DATES, required=False)]),
        outputs=Schema([ColSpec("double", PREDICTION)]))


def _log_pyfunc(served_file: str, artifact_key: str, write_artifact, model, name: str):
    """Log a pyfunc from code (``served_file`` of the package) with one artifact, written by
    ``write_artifact(tmp_dir) -> path``; returns MLflow's ModelInfo."""
    import mlflow.pyfunc
    import pandas as pd

    example = pd.DataFrame({USER_ID: model.user_ids[:2].astype("int64"),
                            MOVIE_ID: model.movie_ids[:2].astype("int64")})
    with tempfile.TemporaryDirectory(prefix="prizeflow-model-") as tmp, \
            package_source() as code, warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: ids never are missing.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        path = write_artifact(Path(tmp))
        # From code, not a pickled instance: loading runs only the package's own code.
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(code / served_file),
            artifacts={artifact_key: str(path)}, code_paths=[str(code)],
            signature=_pyfunc_signature(), input_example=example,
            pip_requirements=pip_requirements())


def log_factor_model(factor_model, name: str = "model"):
    """Log the Spark-free pyfunc into the active run; returns MLflow's ModelInfo."""
    from prizeflow.pyfunc import ARTIFACT_KEY

    def write(folder: Path) -> Path:
        factor_model.save(folder / "factors.npz")
        return folder / "factors.npz"

    return _log_pyfunc("served_model.py", ARTIFACT_KEY, write, factor_model, name)


def log_blended_model(blended_model, name: str = "model"):
    """Log a blend of models (:mod:`prizeflow.model_blend`) as one Spark-free pyfunc carrying
    its members' arrays; returns MLflow's ModelInfo."""
    from prizeflow.pyfunc import BLEND_ARTIFACT_KEY

    def write(folder: Path) -> Path:
        blended_model.save(folder / "blend")
        return folder / "blend"

    return _log_pyfunc("served_blend.py", BLEND_ARTIFACT_KEY, write, blended_model, name)


def log_spark_model(pipeline, dfs_tmpdir: str, name: str = "spark-model"):
    """Log the Spark ML pipeline into the active run (requirements given: inference is slow)."""
    import mlflow.spark
    from importlib.metadata import version

    return mlflow.spark.log_model(
        pipeline, artifact_path=name, dfs_tmpdir=dfs_tmpdir,
        pip_requirements=[f"pyspark=={version('pyspark')}", f"mlflow=={version('mlflow')}"])
