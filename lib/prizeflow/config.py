"""Configuration: a typed model with every key's type and default, overlaid by one YAML file
per environment in ``conf/`` and by ``--set`` overrides, validated at start.

:class:`Config` (pydantic) is the base: a profile names only what it changes. Code reads typed
attributes (``config.train.grid.rank``). Unknown keys, wrong types and out-of-range values are
errors that name the dotted key, and an unknown key gets the nearest valid one
(``train.rank`` -> "did you mean 'train.grid.rank'?"). ``spark.conf`` is free-form: handed to
the SparkSession as it is.
"""

from __future__ import annotations

import difflib
import logging
import types
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat,
                      StrictInt, StrictStr, ValidationError)

from prizeflow.secrets import is_secret_name, redact

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _one_point_axis(value: Any) -> Any:
    # `--set train.grid.rank=8` (or `rank: 8` in a file) means the one-point axis [8].
    return value if isinstance(value, list) else [value]


def _axis(item: Any) -> Any:
    """A grid axis: a non-empty list of ``item`` (a single value is a one-point axis)."""
    return Annotated[list[item], BeforeValidator(_one_point_axis), Field(min_length=1)]


GridKind = Literal["residual", "plain"]  # residual: ALS on r - (mu + b_u + b_i); plain: on r
Positive = Annotated[StrictInt, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]  # strict: an int or a float, never a bool or text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class SparkSettings(Section):
    # Used only when nothing (spark-submit, a notebook) set a master already.
    master: Optional[StrictStr] = "local[*]"
    # A Spark Connect endpoint (sc://host:port/;token=...); SPARK_REMOTE in the environment
    # does the same. Set: no local JVM, the server's own settings and jars apply.
    remote: Optional[StrictStr] = None
    app_name: StrictStr = "prizeflow"
    # packages: resolve Delta from Maven Central; jars: local jar paths (air-gapped);
    # builtin: the runtime already has Delta (Databricks).
    delta_source: Literal["packages", "jars", "builtin"] = "packages"
    delta_jars: list[StrictStr] = []
    # More Maven coordinates for spark.jars.packages, beside Delta's (e.g. hadoop-aws for s3a://).
    packages: list[StrictStr] = []
    conf: dict[str, Union[StrictBool, StrictInt, StrictFloat, StrictStr]] = {}


class LakeSettings(Section):
    root: StrictStr = "lake"


class MlflowSettings(Section):
    tracking_uri: StrictStr = "sqlite:///mlflow.db"
    # Model registry (null: the tracking store, except `databricks`, where MLflow's own
    # default, Unity Catalog, applies).
    registry_uri: Optional[StrictStr] = None
    experiment: StrictStr = "prizeflow"
    registered_model: StrictStr = "prizeflow-als"
    # Where a new experiment keeps artifacts (null: beside a SQLite store, else the server's).
    artifact_location: Optional[StrictStr] = None
    # Scratch space for mlflow.spark model writes; must be storage every executor sees
    # (null: <lake.root>/_tmp/mlflow).
    dfs_tmpdir: Optional[StrictStr] = None
    # How long a tracking or registry server may take to answer: the start-up check and every
    # MLflow HTTP call (each tried at most 4 times).
    timeout_seconds: float = Field(10.0, gt=0)
    # How long a register waits for another one on the same local store (SQLite, folder).
    lock_wait_seconds: float = Field(600.0, ge=0)


class IngestSettings(Section):
    max_quarantine_fraction: float = Field(0.01, ge=0)
    # How long an ingest waits for another one into the same lake to finish.
    lock_wait_seconds: float = Field(600.0, ge=0)
    # A lake on object storage: the lock's lease, renewed while the ingest runs; a holder that
    # stopped renewing for this long is taken over.
    lock_lease_seconds: float = Field(120.0, ge=10)
    # Ratings dated outside these days go to quarantine (date_out_of_range); latest null: the
    # day after the ingest runs (UTC).
    earliest_date: date = date(1990, 1, 1)
    latest_date: Optional[date] = None
    # Remove the rows of files ingested earlier that the source no longer holds.
    remove_missing: StrictBool = False
    # Follow symlinks that lead out of the source folder (else such a link is an error).
    follow_external_links: StrictBool = False


class DataSettings(Section):
    # Which ratings to train on: the Delta version of `ratings` (null = latest).
    version: Optional[StrictInt] = Field(None, ge=0)
    # The Delta version of `probe` (null: as it was while `ratings` stood at data.version).
    probe_version: Optional[StrictInt] = Field(None, ge=0)


class SplitSettings(Section):
    # auto: the Netflix probe when a non-empty `probe` table exists, else hash.
    method: Literal["auto", "probe", "hash", "chronological"] = "auto"
    test_fraction: float = Field(0.1, ge=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    # folds > 1: the test set is hash fold `fold` of `folds` (cross-validation).
    folds: StrictInt = Field(0, ge=0)
    fold: StrictInt = Field(0, ge=0)
    seed: StrictInt = 42


class GridSettings(Section):
    kind: _axis(GridKind) = ["residual"]
    rank: _axis(Positive) = [20, 50]
    reg_param: _axis(NonNegative) = [0.1, 0.15]
    max_iter: _axis(Positive) = [20]
    bias_reg: _axis(NonNegative) = [3.0]


class NeighbourSettings(Section):
    """Item-item neighbourhood on the baseline residuals, blended with the best residual ALS
    point by weights learned on validation (prizeflow.neighbours, prizeflow.blend)."""
    enabled: StrictBool = True
    k: StrictInt = Field(40, ge=1)  # neighbours per prediction, among the movies the user rated
    shrink: float = Field(100.0, ge=0)  # similarity * n / (n + shrink), n co-raters
    damping: float = Field(4.0, ge=0)  # added to the sum of weights of a prediction
    # About this many ratings of each heavier rater feed the similarities (a fixed hash sample):
    # their cost grows with the sum over users of min(n_u, this)^2.
    max_user_ratings: Optional[StrictInt] = Field(300, ge=2)
    keep: Optional[StrictInt] = Field(500, ge=1)  # stored neighbours per movie


class ImplicitSettings(Section):
    """The implicit-feedback part of the blend (prizeflow.implicit); only with the
    neighbourhood blend, whose weights it shares."""
    enabled: StrictBool = True
    rank: StrictInt = Field(20, ge=1)  # of the who-rated-what ALS's item factors
    reg_param: float = Field(0.1, ge=0)
    alpha: float = Field(20.0, gt=0)  # confidence of a rated pair: 1 + alpha
    max_iter: StrictInt = Field(10, ge=1)
    # Share of users (a fixed hash) whose rated pairs learn the item factors.
    sample_users: float = Field(1.0, gt=0, le=1)
    ridge: float = Field(25.0, gt=0)  # of each movie's weights; > 0 keeps every movie solvable


class TimeSettings(Section):
    """The time-aware baseline (prizeflow.time_effects): a bias per movie and time bin and a
    drift per user around the user's mean rating day, in place of mu + b_u + b_i for the
    residual ALS, the neighbourhood and the implicit term. Each list is tried on validation
    (by the baseline's own RMSE, at the first bias_reg); the best pair is used."""
    enabled: StrictBool = True
    bins: StrictInt = Field(30, ge=1)  # equal spans of the training ratings' days
    reg_bin: _axis(NonNegative) = [10.0, 50.0]  # of each (movie, bin) bias
    reg_alpha: _axis(NonNegative) = [10.0, 100.0]  # of each user's drift
    # Of the per-(user, day) bias worked out from the history when scoring (null: none).
    day_reg: Optional[NonNegative] = 5.0


class HalvingSettings(Section):
    """Successive halving: every point first runs `first_iter` iterations; only the best
    `keep_fraction` of them go on to their full max_iter."""
    enabled: StrictBool = False
    first_iter: StrictInt = Field(3, ge=1)
    keep_fraction: float = Field(0.34, gt=0, le=1)


class TrainSettings(Section):
    parallelism: StrictInt = Field(2, ge=1)  # grid points fitted at once
    seed: StrictInt = 42
    refit_on_validation: StrictBool = True
    # Also log the model as a Spark ML PipelineModel (mlflow.spark) for batch scoring.
    log_spark_model: StrictBool = True
    bias_passes: StrictInt = Field(3, ge=1)
    # Test users whose top-10 lists are measured (prizeflow.ranking); 0: none.
    ranking_users: StrictInt = Field(10000, ge=0)
    # ALS user and item blocks (null: from the session's default parallelism and the data).
    num_blocks: Optional[StrictInt] = Field(None, ge=1)
    checkpoint_dir: Optional[StrictStr] = None
    checkpoint_interval: StrictInt = Field(10, ge=1)
    grid: GridSettings = GridSettings()
    neighbours: NeighbourSettings = NeighbourSettings()
    implicit: ImplicitSettings = ImplicitSettings()
    time: TimeSettings = TimeSettings()
    halving: HalvingSettings = HalvingSettings()


class Config(Section):
    spark: SparkSettings = SparkSettings()
    lake: LakeSettings = LakeSettings()
    mlflow: MlflowSettings = MlflowSettings()
    ingest: IngestSettings = IngestSettings()
    data: DataSettings = DataSettings()
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    def override(self, *assignments: str) -> "Config":
        """A copy with ``dotted.key=value`` overrides applied and validated."""
        return _validated(_apply(self.as_dict(), assignments))


FREE_MAPPINGS = ("spark.conf",)


# --- the schema as dotted keys ------------------------------------------------------------

def _section_type(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def dotted_keys(model: type[Section] = Config, prefix: str = "") -> list[str]:
    """Every settable key, dotted (``train.grid.rank``); a free mapping counts as one key."""
    keys = []
    for name, field in model.model_fields.items():
        inner = _section_type(field.annotation)
        if inner is not None:
            keys.extend(dotted_keys(inner, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def default(dotted: str) -> Any:
    """The built-in default of one key."""
    value: Any = Config()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def suggestion(dotted: str) -> str:
    """`` (did you mean 'x'?)`` for a mistyped or misplaced key, or nothing."""
    keys = dotted_keys()
    sections = sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})
    leaf = dotted.rsplit(".", 1)[-1]
    # A right name in the wrong place (train.rank -> train.grid.rank), nearest place first.
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    close = same_leaf or difflib.get_close_matches(dotted, keys + sections, n=1, cutoff=0.75)
    if not close:
        return ""
    best = max(close, key=lambda k: difflib.SequenceMatcher(None, dotted, k).ratio())
    return f" (did you mean '{best}'?)"


def _field(dotted: str):
    """(path, annotation) of a settable key. Below a free mapping the rest of the key is one
    name, dots and all (``spark.conf.spark.sql.shuffle.partitions``)."""
    model: type[Section] = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise ConfigError(f"unknown config key '{dotted}'{suggestion(dotted)}")
        annotation = model.model_fields[part].annotation
        if ".".join(parts[:i + 1]) in FREE_MAPPINGS:
            if i == len(parts) - 1:
                raise ConfigError(f"config key '{dotted}' is a section; set one of its keys")
            return parts[:i + 1] + [".".join(parts[i + 1:])], None
        inner = _section_type(annotation)
        if inner is None:
            if i != len(parts) - 1:
                raise ConfigError(f"unknown config key '{dotted}'{suggestion(dotted)}")
            return parts, annotation
        model = inner
    raise ConfigError(f"config key '{dotted}' is a section; set one of its keys")


def _is_text(annotation: Any) -> bool:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is Union else (annotation,)
    return any(a is str or (typing.get_origin(a) is Annotated and typing.get_args(a)[0] is str)
               for a in args)


# --- loading --------------------------------------------------------------------------------

def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse one ``--set dotted.key=value``; the value is read as a YAML scalar, except for a
    string key and a secret-looking one (``spark.conf.<...>.secret.key``), which take the text as
    given. An error names the ``--set`` by its key, never its value (it may be a secret)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.name=value, got {assignment[:80]!r}")
    dotted, raw = assignment.split("=", 1)
    dotted = dotted.strip()
    try:
        path, annotation = _field(dotted)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from --set {dotted})") from None
    text_key = annotation is not None and _is_text(annotation)
    if (text_key or is_secret_name(path[-1])) and raw != "" and raw != "null":
        value: Any = raw  # "007" stays "007"; a secret such as 0777 stays "0777", not 511
    else:
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"--set {dotted}: the value is not a YAML scalar ({problem})") \
                from None
    return path, value


def _apply(raw: dict[str, Any], assignments: typing.Iterable[str],
           origins: dict[str, str] | None = None) -> dict[str, Any]:
    for assignment in assignments:
        path, value = parse_override(assignment)
        if origins is not None:
            origins[".".join(path)] = f"from --set {'.'.join(path)}"
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return raw


KINDS = {"float_type": "a number", "float_parsing": "a number", "int_type": "an integer",
         "int_parsing": "an integer", "string_type": "a string", "bool_type": "true or false",
         "bool_parsing": "true or false", "list_type": "a list", "int_from_float": "an integer",
         "date_type": "a date (YYYY-MM-DD)", "date_parsing": "a date (YYYY-MM-DD)",
         "date_from_datetime_parsing": "a date (YYYY-MM-DD)"}
BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
          "less_than_equal": "<="}


def _error_key(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
    if loc[:2] == ["spark", "conf"] and len(loc) > 2:
        return f"spark.conf.{loc[2]}"
    return ".".join(loc)


def _describe_error(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
    kind, given, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if loc[:2] == ["spark", "conf"] and len(loc) > 2:
        # The free mapping's key is one name; what follows it names the union member tried.
        return f"config key 'spark.conf.{loc[2]}' must be a scalar, got {type(given).__name__}"
    dotted = ".".join(loc)
    if any(isinstance(p, int) for p in error["loc"]):  # one item of a list (a grid axis)
        return _describe_item_error(dotted, kind, given, ctx)
    if kind == "extra_forbidden":
        return f"unknown config key '{dotted}'{suggestion(dotted)}"
    if kind in BOUNDS:
        bound = next(iter(ctx.values()))
        return f"config key '{dotted}' must be {BOUNDS[kind]} {bound}, got {given!r}"
    if kind == "literal_error":
        return f"config key '{dotted}' must be one of {ctx.get('expected')}, got {given!r}"
    if kind in ("model_type", "dict_type"):
        return f"config key '{dotted}' must be a mapping, got {type(given).__name__}"
    if kind == "too_short":
        return f"config key '{dotted}' must not be empty"
    what = KINDS.get(kind, error["msg"].lower().removeprefix("input should be "))
    return f"config key '{dotted}' must be {what}, got {type(given).__name__} {given!r}"


def error_text(kind: str) -> str:
    return kind.replace("_", " ")


def _describe_item_error(dotted: str, kind: str, given: Any, ctx: dict[str, Any]) -> str:
    if kind in BOUNDS:
        return (f"config key '{dotted}' items must be {BOUNDS[kind]} {next(iter(ctx.values()))}, "
                f"got {given!r}")
    if kind == "literal_error":
        return f"config key '{dotted}' items must be among {ctx.get('expected')}, got {given!r}"
    what = KINDS.get(kind, error_text(kind))
    return f"config key '{dotted}' items must be {what}, got {type(given).__name__} {given!r}"


def _origin(dotted: str, origins: dict[str, str] | None) -> str:
    """`` (conf/x.yaml line 3)`` or `` (from --set k)``: where the key's value came from (the
    key itself, else the nearest section that was set)."""
    if not origins:
        return ""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        where = origins.get(".".join(parts[:end]))
        if where:
            return f" ({where})"
    return ""


def _validated(raw: dict[str, Any], origins: dict[str, str] | None = None) -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        # Report the first problem by its key; the union's alternatives all fail alike.
        error = exc.errors()[0]
        raise ConfigError(_describe_error(error) + _origin(_error_key(error), origins)) from None
    try:
        _check_ranges(config)
    except _KeyError as exc:
        raise ConfigError(str(exc) + _origin(exc.key, origins)) from None
    return config


class _KeyError(ConfigError):
    """A rule broken by ``key``'s value (the caller adds where that value came from)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then ``--set`` overrides; all validated. An error
    names the key and where its value came from (the file and line, or the ``--set``)."""
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte "
                              f"{exc.object[exc.start]:#04x} at offset {exc.start}): is it a "
                              "YAML file?") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}{_yaml_where(exc)} is not valid YAML: "
                              f"{getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top")
        _key_lines(node, str(path), "", origins)
        raw = loaded
    return _validated(_apply(raw, overrides, origins), origins)


def _key_lines(node: yaml.Node, path: str, prefix: str, origins: dict[str, str]) -> None:
    """Record ``config file F line N`` for every dotted key of a YAML mapping; a key written
    twice in one mapping is an error (YAML loaders keep the last one silently)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        dotted = f"{prefix}{key}"
        if key in seen:
            raise ConfigError(f"config file {path}, line {line}: key '{dotted}' is set twice "
                              f"(first on line {seen[key]})")
        seen[key] = line
        origins[dotted] = f"config file {path} line {line}"
        _key_lines(value_node, path, dotted + ".", origins)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f", line {mark.line + 1} column {mark.column + 1}," if mark is not None else ""


def _check_ranges(config: Config) -> None:
    """Rules that involve more than one key."""
    split = config.split
    if split.folds > 1:
        if not 0 <= split.fold < split.folds:
            raise _KeyError("split.fold", "config key 'split.fold' must be in [0, split.folds), "
                            f"got {split.fold}")
    elif split.test_fraction + split.validation_fraction >= 1:
        raise _KeyError("split.validation_fraction",
                        "config keys 'split.test_fraction' + 'split.validation_fraction' "
                        "must leave some ratings for training")


def changes(config: Config) -> str:
    """``key=value`` for every key that differs from its default, secrets masked, one line."""
    def flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted not in FREE_MAPPINGS:
                out.update(flat(value, dotted + "."))
            elif isinstance(value, dict):
                out.update({f"{dotted}.{k}": v for k, v in value.items()})
            else:
                out[dotted] = value
        return out

    now, base = flat(redact(config.as_dict())), flat(Config().as_dict())
    return ", ".join(f"{k}={v}" for k, v in now.items() if base.get(k, object()) != v)


def describe(config: Config) -> str:
    """The resolved config as YAML, for the start-up log and for MLflow, secrets masked."""
    return yaml.safe_dump(redact(config.as_dict()), sort_keys=True, default_flow_style=False)
