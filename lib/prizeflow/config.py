"""Configuration: one YAML file per environment in ``conf/``, validated at start.

Every key has a declared type and default in ``SCHEMA``. Unknown keys, wrong types and bad
``--set`` overrides are errors that name the dotted key. Free-form mappings (for example
``spark.conf``, handed to SparkSession as-is) are declared with ``FreeMapping``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass(frozen=True)
class Key:
    types: tuple[type, ...]
    default: Any
    choices: tuple[Any, ...] | None = None
    nullable: bool = False


@dataclass(frozen=True)
class FreeMapping:
    """A mapping whose keys are not checked; values must be scalars."""


@dataclass(frozen=True)
class StringList:
    default: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValueList:
    """A non-empty list whose items all have one of ``types`` (grid axes)."""
    types: tuple[type, ...]
    default: tuple[Any, ...]
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


SCHEMA: dict[str, Any] = {
    "spark": {
        "master": Key((str,), "local[*]", nullable=True),
        "app_name": Key((str,), "prizeflow"),
        # packages: resolve Delta from Maven Central; jars: local jar paths (air-gapped);
        # builtin: the runtime already has Delta (Databricks).
        "delta_source": Key((str,), "packages", choices=("packages", "jars", "builtin")),
        "delta_jars": StringList(),
        "conf": FreeMapping(),
    },
    "lake": {
        "root": Key((str,), "lake"),
    },
    "mlflow": {
        "tracking_uri": Key((str,), "sqlite:///mlflow.db"),
        # Model registry (null: the tracking store, except `databricks`, where MLflow's own
        # default, Unity Catalog, applies).
        "registry_uri": Key((str,), None, nullable=True),
        "experiment": Key((str,), "prizeflow"),
        "registered_model": Key((str,), "prizeflow-als"),
        # Where a new experiment keeps artifacts (null: beside a SQLite store, else the server's).
        "artifact_location": Key((str,), None, nullable=True),
        # Scratch space for mlflow.spark model writes; must be storage every executor sees
        # (null: <lake.root>/_tmp/mlflow).
        "dfs_tmpdir": Key((str,), None, nullable=True),
    },
    "ingest": {
        "max_quarantine_fraction": Key((float, int), 0.01),
    },
    # Which ratings to train on: the Delta version of `ratings` (null = latest).
    "data": {
        "version": Key((int,), None, nullable=True),
    },
    "split": {
        # auto: the Netflix probe when a non-empty `probe` table exists, else hash.
        "method": Key((str,), "auto", choices=("auto", "probe", "hash", "chronological")),
        "test_fraction": Key((float, int), 0.1),
        "validation_fraction": Key((float, int), 0.1),
        # folds > 1: the test set is hash fold `fold` of `folds` (cross-validation).
        "folds": Key((int,), 0),
        "fold": Key((int,), 0),
        "seed": Key((int,), 42),
    },
    "train": {
        "parallelism": Key((int,), 2),
        "seed": Key((int,), 42),
        "refit_on_validation": Key((bool,), True),
        # Also log the model as a Spark ML PipelineModel (mlflow.spark) for batch scoring.
        "log_spark_model": Key((bool,), True),
        "bias_passes": Key((int,), 3),
        # ALS user and item blocks (null: the session's default parallelism, so one config
        # uses every core of whatever runs it).
        "num_blocks": Key((int,), None, nullable=True),
        "checkpoint_dir": Key((str,), None, nullable=True),
        "checkpoint_interval": Key((int,), 10),
        "grid": {
            # residual: ALS on r - (mu + b_u + b_i); plain: ALS on raw ratings.
            "kind": ValueList((str,), ("residual",), choices=("residual", "plain")),
            "rank": ValueList((int,), (20, 50), minimum=1),
            "reg_param": ValueList((float, int), (0.1, 0.15), minimum=0),
            "max_iter": ValueList((int,), (20,), minimum=1),
            "bias_reg": ValueList((float, int), (3.0,), minimum=0),
        },
        # Item-item neighbourhood on the baseline residuals, blended with the best residual ALS
        # point by weights learned on validation (prizeflow.neighbours, prizeflow.blend).
        "neighbours": {
            "enabled": Key((bool,), True),
            "k": Key((int,), 40),  # neighbours per prediction, among the movies the user rated
            "shrink": Key((float, int), 100.0),  # similarity * n / (n + shrink), n co-raters
            "damping": Key((float, int), 4.0),  # added to the sum of weights of a prediction
            # About this many ratings of each heavier rater feed the similarities (a fixed hash
            # sample): their cost grows with the sum over users of min(n_u, this)^2.
            "max_user_ratings": Key((int,), 300, nullable=True),
            "keep": Key((int,), 500, nullable=True),  # stored neighbours per movie
        },
        # Successive halving: every point first runs `first_iter` iterations; only the best
        # `keep_fraction` of them go on to their full max_iter.
        "halving": {
            "enabled": Key((bool,), False),
            "first_iter": Key((int,), 3),
            "keep_fraction": Key((float, int), 0.34),
        },
    },
}


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if isinstance(spec, dict):
            out[name] = _defaults(spec)
        elif isinstance(spec, FreeMapping):
            out[name] = {}
        elif isinstance(spec, (StringList, ValueList)):
            out[name] = list(spec.default)
        else:
            out[name] = copy.deepcopy(spec.default)
    return out


def _type_name(spec: Key) -> str:
    return " or ".join(t.__name__ for t in spec.types)


def _check_value(dotted: str, spec: Any, value: Any) -> Any:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{dotted}' must be a mapping, got {type(value).__name__}")
        return value
    if isinstance(spec, FreeMapping):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{dotted}' must be a mapping, got {type(value).__name__}")
        for sub, sub_value in value.items():
            if isinstance(sub_value, (dict, list)):
                raise ConfigError(f"config key '{dotted}.{sub}' must be a scalar")
        return value
    if isinstance(spec, StringList):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key '{dotted}' must be a list of strings")
        return value
    if isinstance(spec, ValueList):
        if not isinstance(value, list):
            value = [value]  # `--set train.grid.rank=8` means the one-point axis [8]
        if not value:
            raise ConfigError(f"config key '{dotted}' must not be empty")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, spec.types):
                raise ConfigError(f"config key '{dotted}' must be a list of "
                                  f"{' or '.join(t.__name__ for t in spec.types)}, got {item!r}")
            if spec.choices is not None and item not in spec.choices:
                raise ConfigError(
                    f"config key '{dotted}' items must be among {list(spec.choices)}, got {item!r}")
            if spec.minimum is not None and item < spec.minimum:
                raise ConfigError(f"config key '{dotted}' items must be >= {spec.minimum}, "
                                  f"got {item!r}")
        return value
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"config key '{dotted}' must be {_type_name(spec)}, got null")
    # bool is an int subclass in Python; a YAML `true` is never a number here.
    if isinstance(value, bool) and bool not in spec.types:
        raise ConfigError(f"config key '{dotted}' must be {_type_name(spec)}, got bool")
    if not isinstance(value, spec.types):
        raise ConfigError(
            f"config key '{dotted}' must be {_type_name(spec)}, got {type(value).__name__}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"config key '{dotted}' must be one of {list(spec.choices)}, got {value!r}")
    return value


def _merge(base: dict[str, Any], override: dict[str, Any], schema: dict[str, Any],
           prefix: str = "") -> None:
    for name, value in override.items():
        dotted = f"{prefix}{name}"
        if name not in schema:
            raise ConfigError(f"unknown config key '{dotted}'")
        spec = schema[name]
        value = _check_value(dotted, spec, value)
        if isinstance(spec, dict):
            _merge(base[name], value, spec, dotted + ".")
        elif isinstance(spec, FreeMapping):
            base[name].update(value)
        else:
            base[name] = value


def _resolve(dotted: str) -> tuple[list[str], Any]:
    """Split a dotted key into its path and find its spec. Below a free mapping the rest of the
    key is one name, dots and all (``spark.conf.spark.sql.shuffle.partitions``)."""
    node: Any = SCHEMA
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, FreeMapping):
            return parts[:i] + [".".join(parts[i:])], node
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown config key '{dotted}'")
        node = node[part]
    if isinstance(node, (dict, FreeMapping)):
        raise ConfigError(f"config key '{dotted}' is a section; set one of its keys")
    return parts, node


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse one ``--set dotted.key=value``; the value is read as a YAML scalar."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    path, spec = _resolve(dotted.strip())
    if isinstance(spec, Key) and spec.types == (str,):
        value: Any = raw  # a string key takes the text as given ("007" stays "007")
    else:
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {dotted}: cannot read value {raw!r}: {exc}") from exc
    return path, value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file (if any), then ``--set`` overrides; all validated."""
    config = _defaults(SCHEMA)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top")
        _merge(config, loaded, SCHEMA)
    for assignment in overrides:
        path, value = parse_override(assignment)
        _merge(config, _nest(path, value), SCHEMA)
    _check_ranges(config)
    return config


def _check_ranges(config: dict[str, Any]) -> None:
    """Rules that involve a value's range or more than one key."""
    split, train = config["split"], config["train"]
    for key in ("test_fraction", "validation_fraction"):
        if not 0 <= split[key] < 1:
            raise ConfigError(f"config key 'split.{key}' must be in [0, 1), got {split[key]}")
    if split["folds"] > 1:
        if not 0 <= split["fold"] < split["folds"]:
            raise ConfigError(f"config key 'split.fold' must be in [0, split.folds), "
                              f"got {split['fold']}")
    elif split["test_fraction"] + split["validation_fraction"] >= 1:
        raise ConfigError("config keys 'split.test_fraction' + 'split.validation_fraction' "
                          "must leave some ratings for training")
    for key in ("parallelism", "bias_passes", "num_blocks", "checkpoint_interval"):
        if train[key] is not None and train[key] < 1:
            raise ConfigError(f"config key 'train.{key}' must be >= 1, got {train[key]}")
    neighbours = train["neighbours"]
    for key, minimum in (("k", 1), ("shrink", 0), ("damping", 0), ("max_user_ratings", 2),
                         ("keep", 1)):
        if neighbours[key] is not None and neighbours[key] < minimum:
            raise ConfigError(f"config key 'train.neighbours.{key}' must be >= {minimum}, "
                              f"got {neighbours[key]}")
    halving = train["halving"]
    if not 0 < halving["keep_fraction"] <= 1:
        raise ConfigError("config key 'train.halving.keep_fraction' must be in (0, 1], "
                          f"got {halving['keep_fraction']}")
    if halving["first_iter"] < 1:
        raise ConfigError(f"config key 'train.halving.first_iter' must be >= 1, "
                          f"got {halving['first_iter']}")


def describe(config: dict[str, Any]) -> str:
    """The resolved config as YAML, for the start-up log and for MLflow."""
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
