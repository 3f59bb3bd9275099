"""What the notebooks in ``notebooks/`` share: widgets, config, the session, running a step.

The notebooks are Databricks source files. On Databricks, ``dbutils``, ``display`` and ``spark``
exist already; anywhere else (``python notebooks/01_ingest.py``, a test) ``local_dbutils()`` and
``display`` below stand in for them: widget values come from their defaults or from environment
variables ``PRIZEFLOW_WIDGET_<NAME>`` (for example ``PRIZEFLOW_WIDGET_SOURCE=demo/corpus``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from prizeflow import pipeline
from prizeflow.config import Config, ConfigError
from prizeflow.jobs import common
from prizeflow.spark import get_spark
from prizeflow.steps import SCHEDULED

logger = logging.getLogger(__name__)

WIDGET_ENV_PREFIX = "PRIZEFLOW_WIDGET_"
DISPLAY_DIR_ENV = "PRIZEFLOW_DISPLAY_DIR"


class LocalWidgets:
    """The part of ``dbutils.widgets`` the notebooks use."""

    def __init__(self, environ: dict[str, str] | None = None):
        self._environ = os.environ if environ is None else environ
        self._values: dict[str, str] = {}

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:  # noqa: N803
        self._values[name] = self._environ.get(WIDGET_ENV_PREFIX + name.upper(), defaultValue)

    def dropdown(self, name: str, defaultValue: str, choices: list[str],  # noqa: N803
                 label: str | None = None) -> None:
        self.text(name, defaultValue, label)
        if self._values[name] not in choices:
            raise ValueError(f"widget {name!r}: {self._values[name]!r} is not one of {choices}")

    def get(self, name: str) -> str:
        if name not in self._values:
            raise ValueError(f"widget {name!r} is not defined")
        return self._values[name]

    def removeAll(self) -> None:  # noqa: N802 - Databricks' name
        self._values.clear()


class LocalNotebook:
    """``dbutils.notebook.exit``: records the value instead of ending the process."""

    def __init__(self) -> None:
        self.exit_value: str | None = None

    def exit(self, value: str) -> None:
        self.exit_value = value
        logger.info("notebook exit value: %s", value)


class LocalDbutils:
    def __init__(self, environ: dict[str, str] | None = None):
        self.widgets = LocalWidgets(environ)
        self.notebook = LocalNotebook()


def local_dbutils() -> LocalDbutils:
    return LocalDbutils()


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def default_conf() -> str:
    """The conf profile a notebook starts from: ``databricks`` there, ``local`` elsewhere."""
    return "databricks" if on_databricks() else "local"


def read_widgets(dbutils: Any, defaults: dict[str, str],
                 choices: dict[str, list[str]] | None = None,
                 required: tuple[str, ...] = ()) -> dict[str, str]:
    """Declare the widgets (text, or dropdown when ``choices`` has the name) and read them back,
    stripped. A required widget left empty is an error naming it."""
    common.setup_logging()
    choices = choices or {}
    for name, default in defaults.items():
        if name in choices:
            dbutils.widgets.dropdown(name, default, choices[name], name)
        else:
            dbutils.widgets.text(name, default, name)
    values = {name: str(dbutils.widgets.get(name)).strip() for name in defaults}
    empty = [name for name in required if not values[name]]
    if empty:
        raise ValueError(f"widget {empty[0]!r} is empty: set it before running the notebook")
    return values


def conf_path(conf: str, search: tuple[Path, ...] = (Path("conf"), Path("../conf"))) -> Path:
    """A conf file path as given, or a profile name (``local``, ``databricks``) looked up in
    ``conf/`` beside the working directory or its parent (a notebook's folder on Databricks)."""
    given = Path(conf)
    if given.suffix in (".yaml", ".yml"):
        if not given.is_file():
            raise ConfigError(f"config file not found: {given}")
        return given
    for folder in search:
        candidate = folder / f"{conf}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"conf profile {conf!r} not found in {', '.join(map(str, search))}")


def notebook_config(conf: str, overrides: str = "") -> Config:
    """The validated config: a profile or file plus ``key=value`` overrides, one per line or
    separated by ``;``."""
    assignments = [part.strip() for line in overrides.splitlines() for part in line.split(";")]
    return common.resolve_config(str(conf_path(conf)), [a for a in assignments if a])


def spark_session(config: Config):
    """The notebook's SparkSession: the cluster's on Databricks, else one built from config."""
    return get_spark(config)


def run_step(step: str, spark: Any, config: Config, **inputs: Any) -> dict[str, Any]:
    """Run one step in this session, as ``prizeflow <step>`` would; returns its summary.
    ``inputs`` are the step's inputs by their names in :mod:`prizeflow.steps` (ingest:
    ``source``, ``fmt``; register: ``run_id``; recommend: ``top``, ``alias``)."""
    if step not in SCHEDULED:
        raise ValueError(f"unknown step {step!r}: one of {', '.join(SCHEDULED)}")
    return pipeline.run_step(step, spark, config, **inputs)


def summary_table(summary: dict[str, Any]):
    """A summary as a two-column pandas frame (nested keys dotted), for ``display``."""
    import pandas as pd

    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append((prefix, str(value)))

    walk("", summary)
    return pd.DataFrame(rows, columns=["field", "value"])


def display(item: Any) -> None:
    """Local stand-in for Databricks ``display``: tables are logged, figures saved as PNG under
    ``$PRIZEFLOW_DISPLAY_DIR`` (default: a temporary folder)."""
    if hasattr(item, "savefig"):
        folder = Path(os.environ.get(DISPLAY_DIR_ENV) or tempfile.mkdtemp(prefix="prizeflow-display-"))
        folder.mkdir(parents=True, exist_ok=True)
        title = item.axes[0].get_title() if item.axes else "figure"
        name = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "figure"
        path = folder / f"{len(list(folder.glob('*.png'))):02d}_{name}.png"
        item.savefig(path, dpi=80)
        logger.info("figure %r saved to %s", title, path)
        return
    if hasattr(item, "toPandas"):
        item = item.limit(50).toPandas()
    text = item.to_string(index=False) if hasattr(item, "to_string") else str(item)
    logger.info("display:\n%s", text)
