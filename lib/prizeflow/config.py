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
        "experiment": Key((str,), "prizeflow"),
        "registered_model": Key((str,), "prizeflow-als"),
    },
    "ingest": {
        "max_quarantine_fraction": Key((float, int), 0.01),
    },
}


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if isinstance(spec, dict):
            out[name] = _defaults(spec)
        elif isinstance(spec, FreeMapping):
            out[name] = {}
        elif isinstance(spec, StringList):
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
    return config


def describe(config: dict[str, Any]) -> str:
    """The resolved config as YAML, for the start-up log and for MLflow."""
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
