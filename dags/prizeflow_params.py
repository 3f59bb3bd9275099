"""What a DAG run's parameters may change, checked before any task starts a job.

Anyone who can trigger the DAG chooses its parameters. Left free, they could point the pipeline
at another MLflow tracking server (whose `@champion` model code the pipeline would then run),
another lake, a Spark Connect server, extra jars or JVM options. So:

- `conf` must be a YAML file inside the deployment's config folder (`PRIZEFLOW_DAG_CONF_DIR`,
  default `<PRIZEFLOW_HOME>/conf`), symlinks resolved;
- each of `overrides` (`dotted.key=value`) must name a key the deployment allows: the tuning keys
  in `SAFE_OVERRIDES`, plus the patterns in `PRIZEFLOW_DAG_ALLOWED_OVERRIDES` (comma-separated
  `fnmatch` patterns, e.g. `lake.root,mlflow.tracking_uri` on a test deployment).

Anything else fails the task with one line naming the parameter. Imports nothing from Airflow or
prizeflow, so the check is tested in the pipeline's own venv.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path

# Tuning only: nothing here names a server, a path, code or credentials.
SAFE_OVERRIDES = (
    "train.*", "split.*", "data.version", "data.probe_version",
    "ingest.max_quarantine_fraction", "ingest.lock_wait_seconds", "ingest.earliest_date",
    "ingest.latest_date", "ingest.remove_missing", "mlflow.timeout_seconds",
    "spark.conf.spark.sql.shuffle.partitions",
)
ALLOWED_ENV = "PRIZEFLOW_DAG_ALLOWED_OVERRIDES"
CONF_DIR_ENV = "PRIZEFLOW_DAG_CONF_DIR"


class ParameterError(ValueError):
    """A DAG run parameter the deployment does not allow."""


def allowed_patterns(environ=os.environ) -> tuple[str, ...]:
    extra = [p.strip() for p in environ.get(ALLOWED_ENV, "").split(",") if p.strip()]
    return SAFE_OVERRIDES + tuple(extra)


def check_overrides(overrides, environ=os.environ) -> list[str]:
    """``overrides`` as they are, once every key is allowed."""
    patterns = allowed_patterns(environ)
    checked = []
    for assignment in overrides or []:
        assignment = str(assignment)
        key = assignment.split("=", 1)[0].strip()
        if "=" not in assignment or not key:
            raise ParameterError(f"DAG parameter overrides: {key[:80]!r} is not dotted.name=value")
        if not any(fnmatchcase(key, pattern) for pattern in patterns):
            raise ParameterError(
                f"DAG parameter overrides: {key!r} may not be set from a DAG run (it could point "
                f"the pipeline at another server, lake or code); the deployment allows it by "
                f"adding it to {ALLOWED_ENV}")
        checked.append(assignment)
    return checked


def check_conf(conf: str, home: Path, environ=os.environ) -> str:
    """``conf`` when it is a file inside the deployment's config folder."""
    folder = Path(environ.get(CONF_DIR_ENV) or home / "conf").resolve()
    path = Path(conf)
    resolved = (path if path.is_absolute() else folder / path).resolve()
    if not resolved.is_relative_to(folder):
        raise ParameterError(f"DAG parameter conf: {conf!r} is not inside the deployment's config "
                             f"folder {folder} (set {CONF_DIR_ENV} to change the folder)")
    if not resolved.is_file():
        raise ParameterError(f"DAG parameter conf: {conf!r} is not a file in {folder}")
    return str(resolved)
