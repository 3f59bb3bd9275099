"""The Databricks Asset Bundle (`databricks.yml` and `resources/*.yml`), checked without a
workspace.

- **Resolved per target as the Databricks CLI would**: the included resource files, the target's
  mode, workspace paths and variable values, then every `${var.*}`, `${bundle.*}` and
  `${workspace.*}` reference (a reference left unresolved fails). Each job is then walked
  against the Databricks SDK's job dataclasses (`databricks.sdk.service.jobs.JobSettings` and
  everything under it): an unknown key, a missing required key, a wrong type or an unknown enum
  value at any depth fails, naming its path (`job.tasks[0].python_wheel_tsk`).
- **What the job points at**: the wheel the bundle builds is the one the tasks install, the
  conf file is in the synced files and loads with the tasks' `--set`s, the entry point is the
  wheel's console script, and each task's arguments parse with its command's own parser.
- **The tasks themselves**, run in-process in task order with the same arguments, against a
  local lake and MLflow store (the one part that needs Spark).

The resolver covers what this bundle uses; anything else in a target (resource overrides,
lookups) fails loudly rather than being skipped.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import difflib
import enum
import functools
import io
import json
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JOB = "prizeflow_pipeline"
TARGETS = ("dev", "staging", "prod")
# Stand-ins for what only a workspace knows: who deploys, and the id of a job run.
USER = "someone@example.com"
RUN_ID = "731942"

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
DYNAMIC = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

# The keys this resolver applies (`sync` only chooses files); the CLI knows more (run_as,
# permissions, presets, resource overrides in a target, ...), and one of those fails here
# instead of being ignored, since each can change the job that is deployed.
TOP_LEVEL_KEYS = {"bundle", "include", "workspace", "artifacts", "variables", "resources",
                  "targets", "sync"}
TARGET_KEYS = {"mode", "default", "workspace", "variables"}
VARIABLE_KEYS = {"description", "default", "type", "lookup"}
# The one key a bundle's job has that the Jobs API's JobSettings does not (the CLI turns it into
# a separate permissions call): checked on its own.
BUNDLE_ONLY_JOB_KEYS = {"permissions"}
PERMISSION_PRINCIPALS = {"user_name", "group_name", "service_principal_name"}


class BundleError(AssertionError):
    """The bundle does not resolve or does not validate; the message names where."""


@dataclass
class Sources:
    """databricks.yml with its included resources merged in, and the file each job came from
    (paths in a resource are relative to its own file)."""
    config: dict[str, Any]
    job_files: dict[str, Path]


@dataclass
class Bundle:
    target: str
    mode: str | None
    explicit_root_path: bool
    variables: dict[str, Any]
    workspace: dict[str, Any]
    artifacts: dict[str, Any]
    jobs: dict[str, dict[str, Any]]
    job_files: dict[str, Path]


# --- loading and resolving ---------------------------------------------------------------------

def _load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise BundleError(f"{path.relative_to(ROOT)} must hold a mapping at the top")
    return loaded


def load_sources(root: Path = ROOT) -> Sources:
    config = _load_yaml(root / "databricks.yml")
    unknown = set(config) - TOP_LEVEL_KEYS
    if unknown:
        raise BundleError(f"databricks.yml: {sorted(unknown)} unknown or not applied by this "
                          "resolver: extend it before relying on them")
    job_files = {name: root / "databricks.yml"
                 for name in config.get("resources", {}).get("jobs", {})}
    for pattern in config.pop("include", []):
        matches = sorted(root.glob(pattern))
        if not matches:
            raise BundleError(f"include {pattern!r} matches no file")
        for path in matches:
            part = _load_yaml(path)
            if set(part) != {"resources"}:
                raise BundleError(f"{path.relative_to(ROOT)}: this resolver merges only "
                                  f"`resources` from included files, found {sorted(part)}")
            merged = config.setdefault("resources", {})
            for kind, items in part["resources"].items():
                for name, body in items.items():
                    if name in merged.setdefault(kind, {}):
                        raise BundleError(f"resources.{kind}.{name} is defined twice")
                    merged[kind][name] = body
                    if kind == "jobs":
                        job_files[name] = path
    return Sources(config, job_files)


def _variable_values(config: dict, target: dict, target_name: str,
                     overrides: dict[str, Any]) -> dict[str, Any]:
    declared = config.get("variables", {})
    values = {}
    for name, spec in declared.items():
        unknown = set(spec or {}) - VARIABLE_KEYS
        if unknown:
            raise BundleError(f"variables.{name}: unknown key(s) {sorted(unknown)}")
        if "lookup" in (spec or {}):
            raise BundleError(f"variables.{name}: lookups need a workspace")
        if "default" in (spec or {}):
            values[name] = spec["default"]
    for name, value in (target.get("variables") or {}).items():
        if name not in declared:
            raise BundleError(f"targets.{target_name}.variables.{name} is not a declared variable")
        if isinstance(value, dict):
            if set(value) != {"default"}:
                raise BundleError(f"targets.{target_name}.variables.{name}: only a value or "
                                  f"{{default: ...}} is resolved here, found {sorted(value)}")
            value = value["default"]
        values[name] = value
    for name, value in overrides.items():
        if name not in declared:
            raise BundleError(f"override of undeclared variable {name!r}")
        values[name] = value
    missing = sorted(set(declared) - set(values))
    if missing:
        raise BundleError(f"target {target_name}: no value for variable(s) {missing} "
                          f"(give a default, a value in the target, or --var)")
    return values


class _Resolver:
    """`${...}` substitution over bundle, workspace and variables. A string that is one whole
    reference takes the referenced value with its type (as the CLI does, so `${var.workers}`
    can fill an integer field); a reference inside longer text must name a scalar."""

    def __init__(self, context: dict[str, Any]):
        self.context = context
        self.done: dict[str, Any] = {}

    def lookup(self, path: str, where: str, stack: tuple[str, ...]) -> Any:
        if path in stack:
            raise BundleError(f"{where}: reference cycle {' -> '.join((*stack, path))}")
        if path in self.done:
            return self.done[path]
        head, *rest = path.split(".")
        if head not in ("var", "bundle", "workspace"):
            raise BundleError(f"{where}: ${{{path}}} is not resolvable offline (only var.*, "
                              "bundle.* and workspace.* are)")
        if head == "var" and len(rest) != 1:
            raise BundleError(f"{where}: ${{{path}}}: variables here are simple values")
        node: Any = self.context[head]
        for part in rest:
            if not isinstance(node, dict) or part not in node:
                raise BundleError(f"{where}: unresolved reference ${{{path}}}")
            node = node[part]
        value = self.resolve(node, f"${{{path}}}", (*stack, path))
        self.done[path] = value
        return value

    def resolve(self, value: Any, where: str, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{where}.{k}", stack) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{where}[{i}]", stack) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        whole = REFERENCE.fullmatch(value)
        if whole:
            return self.lookup(whole.group(1), where, stack)

        def text(match: re.Match) -> str:
            found = self.lookup(match.group(1), where, stack)
            if isinstance(found, (dict, list)) or found is None:
                raise BundleError(f"{where}: ${{{match.group(1)}}} is not a scalar")
            return str(found).lower() if isinstance(found, bool) else str(found)

        resolved = REFERENCE.sub(text, value)
        if "${" in resolved:
            raise BundleError(f"{where}: unresolved reference in {value!r}")
        return resolved


def resolve(sources: Sources, target_name: str, overrides: dict[str, Any] | None = None) -> Bundle:
    """The bundle as `databricks bundle validate -t <target>` would see it, offline."""
    config = copy.deepcopy(sources.config)
    targets = config.get("targets") or {}
    if target_name not in targets:
        raise BundleError(f"no target {target_name!r} (targets: {sorted(targets)})")
    target = targets[target_name] or {}
    unhandled = set(target) - TARGET_KEYS
    if unhandled:
        raise BundleError(f"targets.{target_name}: {sorted(unhandled)} not applied by this "
                          "resolver: extend it before relying on them")
    mode = target.get("mode")
    if mode not in (None, "development", "production"):
        raise BundleError(f"targets.{target_name}.mode: {mode!r} is not development or production")

    bundle = {**config.get("bundle", {}), "target": target_name}
    workspace = {"host": "https://example.cloud.databricks.com",
                 "current_user": {"userName": USER, "short_name": USER.split("@")[0]},
                 **(config.get("workspace") or {}), **(target.get("workspace") or {})}
    workspace.setdefault("root_path", "/Workspace/Users/${workspace.current_user.userName}"
                                      "/.bundle/${bundle.name}/${bundle.target}")
    for key, folder in (("file_path", "files"), ("artifact_path", "artifacts"),
                        ("state_path", "state"), ("resource_path", "resources")):
        workspace.setdefault(key, "${workspace.root_path}/" + folder)
    variables = _variable_values(config, target, target_name, overrides or {})

    resolver = _Resolver({"bundle": bundle, "workspace": workspace, "var": variables})
    jobs = resolver.resolve(config.get("resources", {}).get("jobs", {}), "resources.jobs")
    return Bundle(
        target=target_name, mode=mode,
        explicit_root_path="root_path" in (target.get("workspace") or {}),
        variables={name: resolver.lookup(f"var.{name}", f"variables.{name}", ())
                   for name in variables},
        workspace=resolver.resolve(workspace, "workspace"),
        artifacts=resolver.resolve(config.get("artifacts", {}), "artifacts"),
        jobs=jobs, job_files=dict(sources.job_files))


def strings(value: Any, where: str = ""):
    """Every string in a nested value, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


# --- validation against the SDK's job types ---------------------------------------------------

@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _required(item: dataclasses.Field) -> bool:
    return item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING


def _walk(value: Any, kind: Any, path: str, problems: list[str]) -> None:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        if value is None:
            problems.append(f"{path}: null (give a value or leave the key out)")
            return
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping ({kind.__name__}), got "
                            f"{type(value).__name__}")
            return
        fields = {f.name: f for f in dataclasses.fields(kind)}
        for key, item in value.items():
            if key not in fields:
                near = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(f"{path}.{key}: unknown key for {kind.__name__}{hint}")
            else:
                _walk(item, _hints(kind)[key], f"{path}.{key}", problems)
        for name, item in fields.items():
            if _required(item) and name not in value:
                problems.append(f"{path}.{name}: required by {kind.__name__}, missing")
    elif origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _walk(item, args[0], f"{path}[{i}]", problems)
    elif origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path}: key {key!r} is not a string")
            _walk(item, args[1], f"{path}.{key}", problems)
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        allowed = [m.value for m in kind]
        if value not in allowed:
            problems.append(f"{path}: {value!r} is not a {kind.__name__} ({', '.join(allowed)})")
    elif kind is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {value!r}")
    else:
        problems.append(f"{path}: no rule for type {kind!r}: extend the validator")


def _check_permissions(value: Any, path: str, problems: list[str]) -> None:
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list")
        return
    for i, entry in enumerate(value):
        keys = set(entry) if isinstance(entry, dict) else set()
        if "level" not in keys or len(keys & PERMISSION_PRINCIPALS) != 1 or \
                keys - PERMISSION_PRINCIPALS - {"level"}:
            problems.append(f"{path}[{i}]: expected `level` and one of "
                            f"{sorted(PERMISSION_PRINCIPALS)}, got {entry!r}")


def validate_job(settings: dict[str, Any], where: str = "job") -> None:
    """Raise BundleError listing every problem of a resolved job against the SDK's types."""
    from databricks.sdk.service.jobs import JobSettings

    problems: list[str] = []
    if not isinstance(settings, dict):
        raise BundleError(f"{where}: expected a mapping")
    settings = dict(settings)
    for key in BUNDLE_ONLY_JOB_KEYS & set(settings):
        _check_permissions(settings.pop(key), f"{where}.{key}", problems)
    _walk(settings, JobSettings, where, problems)
    if problems:
        raise BundleError("\n".join(problems))


# --- the job's tasks ----------------------------------------------------------------------------

def task_order(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks in an order their depends_on allows (ties by position)."""
    tasks = {t["task_key"]: t for t in job["tasks"]}
    order, placed = [], set()
    while len(order) < len(tasks):
        ready = [key for key, t in tasks.items() if key not in placed and
                 all(d["task_key"] in placed for d in t.get("depends_on", []))]
        if not ready:
            raise BundleError(f"depends_on has a cycle or an unknown task among "
                              f"{sorted(set(tasks) - placed)}")
        order.append(tasks[ready[0]])
        placed.add(ready[0])
    return order


def parameter_defaults(job: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["default"] for p in job.get("parameters", [])}


def expand_dynamic(arguments: list[str], parameters: dict[str, str], run_id: str) -> list[str]:
    """What Databricks passes at run time: `{{job.parameters.X}}` and `{{job.run_id}}`
    replaced; any other dynamic reference fails, as does an undefined parameter."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        parameter = name.removeprefix("job.parameters.")
        if name == "job.run_id":
            return run_id
        if parameter != name and parameter in parameters:
            return parameters[parameter]
        raise BundleError(f"dynamic reference {{{{{name}}}}} names no job parameter")

    return [DYNAMIC.sub(value, argument) for argument in arguments]


def parse_task(arguments: list[str]):
    """(command, parsed namespace) of a wheel task's arguments, through the parser
    `prizeflow <command>` builds from the step table; a mistake fails with argparse's message."""
    from prizeflow.jobs.common import build_parser
    from prizeflow.steps import STEPS

    command, rest = arguments[0], arguments[1:]
    if command not in STEPS:
        raise BundleError(f"{command!r} is not a prizeflow command ({', '.join(STEPS)})")
    parser = build_parser(command)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return command, parser.parse_args(rest)
    except SystemExit:
        said = stderr.getvalue().strip().splitlines()
        raise BundleError(f"prizeflow {command} {shlex.join(rest)}: "
                          f"{said[-1] if said else 'exited'}") from None


def local_conf(bundle: Bundle, conf: str) -> Path:
    """The repository file a workspace conf path comes from (files sync under file_path)."""
    prefix = bundle.workspace["file_path"].rstrip("/") + "/"
    if not conf.startswith(prefix):
        raise BundleError(f"conf {conf} is not under the bundle's synced files ({prefix})")
    return ROOT / conf.removeprefix(prefix)


@pytest.fixture(scope="module")
def sources() -> Sources:
    return load_sources()


@pytest.fixture(scope="module")
def bundles(sources) -> dict[str, Bundle]:
    return {target: resolve(sources, target) for target in TARGETS}


# --- a. the bundle resolves and each job is valid against the SDK ------------------------------

def test_the_targets_are_dev_staging_and_prod_with_dev_the_default(sources):
    targets = sources.config["targets"]
    assert sorted(targets) == sorted(TARGETS)
    assert [name for name, t in targets.items() if (t or {}).get("default")] == ["dev"]
    assert sources.config["bundle"]["name"] == "prizeflow"
    assert set(sources.job_files) == {JOB}


@pytest.mark.parametrize("target", TARGETS)
def test_every_reference_resolves(bundles, target):
    bundle = bundles[target]
    left = [(where, text) for where, text in strings(
        {"jobs": bundle.jobs, "artifacts": bundle.artifacts, "workspace": bundle.workspace,
         "variables": bundle.variables}) if "${" in text]
    assert not left, left


def test_the_targets_keep_their_data_and_models_apart(bundles):
    for target, bundle in bundles.items():
        catalog = bundle.variables["catalog"]
        assert catalog == target
        assert bundle.variables["model_name"] == f"{catalog}.prizeflow.prizeflow_als"
        assert bundle.variables["lake_root"] == f"/Volumes/{catalog}/prizeflow/prizeflow/lake"
        assert parameter_defaults(bundle.jobs[JOB])["source"].startswith(f"/Volumes/{catalog}/")
    for key in ("model_name", "lake_root", "experiment"):
        assert len({b.variables[key] for b in bundles.values()}) == len(bundles), key
    assert len({b.workspace["root_path"] for b in bundles.values()}) == len(bundles)


def test_the_modes_follow_the_cli_rules(bundles):
    """`bundle deploy` refuses a development target whose paths are not the user's and a
    production target without an explicit root_path (unless every job has run_as)."""
    assert bundles["dev"].mode == "development"
    assert USER in bundles["dev"].workspace["root_path"]
    for target in ("staging", "prod"):
        bundle = bundles[target]
        assert bundle.mode == "production"
        assert bundle.explicit_root_path or all("run_as" in j for j in bundle.jobs.values())
        assert bundle.workspace["root_path"].endswith(f"/.bundle/prizeflow/{target}")


@pytest.mark.parametrize("target", TARGETS)
def test_the_job_is_valid_against_the_sdk_job_types(bundles, target):
    bundle = bundles[target]
    for name, job in bundle.jobs.items():
        validate_job(job, f"resources.jobs.{name}")


def test_a_misspelt_task_key_fails_naming_its_path(bundles):
    job = copy.deepcopy(bundles["dev"].jobs[JOB])
    job["tasks"][0]["python_wheel_tsk"] = job["tasks"][0].pop("python_wheel_task")
    with pytest.raises(BundleError) as failure:
        validate_job(job)
    assert ("job.tasks[0].python_wheel_tsk: unknown key for Task (did you mean "
            "'python_wheel_task'?)") in str(failure.value)


DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    (("max_concurrent_runs",), "1", "job.max_concurrent_runs: expected an integer, got '1'"),
    (("tasks", 1, "python_wheel_task", "parameters", 2), 731942,
     "job.tasks[1].python_wheel_task.parameters[2]: expected a string, got 731942"),
    (("tasks", 0, "python_wheel_task", "entry_pointt"), "prizeflow",
     "job.tasks[0].python_wheel_task.entry_pointt: unknown key for PythonWheelTask "
     "(did you mean 'entry_point'?)"),
    (("job_clusters", 0, "new_cluster", "data_security_mode"), "SINGLE_USR",
     "job.job_clusters[0].new_cluster.data_security_mode: 'SINGLE_USR' is not a "
     "DataSecurityMode"),
    (("parameters", 0, "default"), 10, "job.parameters[0].default: expected a string, got 10"),
    (("tasks", 2, "depends_on", 0, "task_key"), DELETE,
     "job.tasks[2].depends_on[0].task_key: required by TaskDependency, missing"),
    (("tasks", 3, "libraries", 0, "whl"), None, "job.tasks[3].libraries[0].whl: null"),
    (("permissions",), [{"level": "CAN_VIEW"}], "job.permissions[0]: expected `level` and one of"),
], ids=["int-as-text", "number-argument", "nested-typo", "enum", "parameter-default",
        "required", "null", "permissions"])
def test_a_wrong_key_type_or_value_fails_naming_its_path(bundles, path, value, message):
    job = copy.deepcopy(bundles["dev"].jobs[JOB])
    *parents, last = path
    node = job
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(BundleError) as failure:
        validate_job(job)
    assert message in str(failure.value)


def test_an_unresolved_reference_or_a_variable_without_value_fails(sources):
    typo = copy.deepcopy(sources)
    parameters = typo.config["resources"]["jobs"][JOB]["tasks"][0]["python_wheel_task"][
        "parameters"]
    parameters[parameters.index("${var.conf}")] = "${var.confs}"
    with pytest.raises(BundleError, match=r"unresolved reference \$\{var\.confs\}"):
        resolve(typo, "dev")
    no_catalog = copy.deepcopy(sources)
    del no_catalog.config["targets"]["staging"]["variables"]["catalog"]
    with pytest.raises(BundleError, match=r"target staging: no value for variable\(s\) "
                                          r"\['catalog'\]"):
        resolve(no_catalog, "staging")
    override = copy.deepcopy(sources)
    override.config["targets"]["prod"]["resources"] = {"jobs": {JOB: {"max_concurrent_runs": 2}}}
    with pytest.raises(BundleError, match=r"\['resources'\] not applied by this resolver"):
        resolve(override, "prod")


# --- b. what the job points at exists and its arguments parse ----------------------------------

def _setup_call() -> dict[str, Any]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    return {kw.arg: kw.value for kw in call.keywords}


def test_the_wheel_the_tasks_install_is_the_one_the_bundle_builds(bundles):
    artifacts = bundles["dev"].artifacts
    assert len(artifacts) == 1
    artifact = next(iter(artifacts.values()))
    assert artifact["type"] == "whl"
    source = (ROOT / artifact["path"]).resolve()
    assert (source / "setup.py").is_file() and source == ROOT
    build = shlex.split(artifact["build"])
    assert build[build.index("--wheel-dir") + 1] == "dist" and "--no-deps" in build
    wheels = (source / "dist" / "*.whl").resolve()
    for bundle in bundles.values():
        job_file = bundle.job_files[JOB]
        for task in bundle.jobs[JOB]["tasks"]:
            libraries = [lib["whl"] for lib in task.get("libraries", [])]
            assert len(libraries) == 1, task["task_key"]
            # Paths in a resource file are relative to that file, not to databricks.yml.
            assert (job_file.parent / libraries[0]).resolve() == wheels, task["task_key"]


def test_the_entry_point_is_the_wheels_console_script(bundles):
    from importlib.metadata import entry_points

    import prizeflow.cli

    setup = _setup_call()
    name = ast.literal_eval(setup["name"])
    scripts = ast.literal_eval(setup["entry_points"])["console_scripts"]
    declared = dict(s.replace(" ", "").split("=", 1) for s in scripts)
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    for bundle in bundles.values():
        for task in bundle.jobs[JOB]["tasks"]:
            wheel_task = task["python_wheel_task"]
            assert wheel_task["package_name"] == name == "prizeflow"
            point = wheel_task["entry_point"]
            assert declared[point] == "prizeflow.cli:entry_point"
            assert installed[point].value == "prizeflow.cli:entry_point"
            assert installed[point].dist.name == name
    assert installed["prizeflow"].load() is prizeflow.cli.entry_point


@pytest.mark.parametrize("target", TARGETS)
def test_the_conf_file_is_in_the_bundle_and_agrees_with_the_job(bundles, target):
    from prizeflow.config import load_config

    bundle = bundles[target]
    assert bundle.variables["conf"] == f"{bundle.workspace['file_path']}/conf/databricks.yaml"
    path = local_conf(bundle, bundle.variables["conf"])
    assert path.is_file()
    job = bundle.jobs[JOB]
    first = expand_dynamic(task_order(job)[0]["python_wheel_task"]["parameters"],
                           parameter_defaults(job), RUN_ID)
    _, args = parse_task(first)
    config = load_config(path, args.overrides)
    # MLflow on Databricks with the Unity Catalog registry, which needs catalog.schema.model.
    assert config.mlflow.tracking_uri == "databricks" and config.mlflow.registry_uri is None
    assert config.mlflow.registered_model == bundle.variables["model_name"]
    assert len(config.mlflow.registered_model.split(".")) == 3
    assert config.mlflow.experiment == bundle.variables["experiment"]
    assert config.lake.root == bundle.variables["lake_root"]
    volume = bundle.variables["volume_root"]
    assert config.mlflow.dfs_tmpdir.startswith(volume + "/")
    assert config.train.checkpoint_dir.startswith(volume + "/")
    assert config.spark.master is None and config.spark.delta_source == "builtin"


@pytest.mark.parametrize("target", TARGETS)
def test_every_task_parses_with_its_command_parser(bundles, target):
    from prizeflow.config import load_config
    from prizeflow.steps import SCHEDULED

    bundle = bundles[target]
    job = bundle.jobs[JOB]
    defaults = parameter_defaults(job)
    order = task_order(job)
    # The steps a scheduled pipeline runs as separate tasks, as the Airflow DAG does.
    assert [t["task_key"] for t in order] == list(SCHEDULED)
    assert [t.get("depends_on", []) for t in order] == [
        [], [{"task_key": "ingest"}], [{"task_key": "train"}], [{"task_key": "register"}]]
    overrides = None
    for task in order:
        arguments = expand_dynamic(task["python_wheel_task"]["parameters"], defaults, RUN_ID)
        command, args = parse_task(arguments)
        assert command == task["task_key"]
        assert args.conf == bundle.variables["conf"]
        # The steps share one config: the same --set list, but for train's data version.
        shared = [o for o in args.overrides if not o.startswith("data.version=")]
        assert shared == overrides or overrides is None, command
        overrides = shared
        load_config(local_conf(bundle, args.conf), args.overrides)
        if command == "ingest":
            assert args.source == defaults["source"] and args.fmt == defaults["format"]
        if command in ("train", "register"):
            # register takes the model this job run's train made.
            assert args.pipeline_run == RUN_ID
        if command == "recommend":
            assert args.top == int(defaults["top"]) and args.alias == "champion"


def test_a_bad_task_argument_fails_with_the_parsers_message():
    with pytest.raises(BundleError, match=r"unrecognized arguments: --pipeline-runs 1"):
        parse_task(["train", "--pipeline-runs", "1"])
    with pytest.raises(BundleError, match=r"'fly' is not a prizeflow command"):
        parse_task(["fly"])
    with pytest.raises(BundleError, match=r"\{\{job.parameters.sauce\}\} names no job parameter"):
        expand_dynamic(["--source", "{{job.parameters.sauce}}"], {"source": "x"}, RUN_ID)


def test_every_job_parameter_is_used_and_every_reference_is_known(bundles):
    job = bundles["dev"].jobs[JOB]
    used = {m.group(1) for t in job["tasks"] for a in t["python_wheel_task"]["parameters"]
            for m in DYNAMIC.finditer(a)}
    defined = {f"job.parameters.{name}" for name in parameter_defaults(job)}
    assert used == defined | {"job.run_id"}


# --- c. every task, run locally in task order --------------------------------------------------

MODEL = "prizeflow-bundle-als"


# The whole pipeline task by task (about 90 s): with the other deployment paths, in
# `make test-deploy`, which CI runs too.
@pytest.mark.deploy
@pytest.mark.spark
@pytest.mark.mlflow
@pytest.mark.timeout(1800)
def test_the_tasks_run_locally_in_order(spark, sources, tmp_path, capsys):
    """The dev target's job with its variables pointed at a temporary folder: each task's
    parameters, job references filled in as Databricks would, through `prizeflow.cli.main`."""
    from mlflow.tracking import MlflowClient

    from conftest import TEST_SPARK_CONF
    from prizeflow import cli, lake
    from prizeflow.generate import generate_corpus, make_spec
    from prizeflow.steps import SCHEDULED
    from pyspark.sql import functions as F

    corpus = tmp_path / "corpus"
    generated = generate_corpus(make_spec(corpus, 30_000, users=600, movies=150, seed=5))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    volume = tmp_path / "volume"
    # What tests/conftest.py's make_config sets, as a conf file, with a one-point grid.
    conf = tmp_path / "local.yaml"
    conf.write_text(yaml.safe_dump({
        "spark": {"master": "local[2]", "conf": dict(TEST_SPARK_CONF)},
        "lake": {"root": str(volume / "lake")},
        "mlflow": {"tracking_uri": tracking_uri},
        "train": {"num_blocks": 2, "log_spark_model": False,
                  "grid": {"rank": [4], "reg_param": [0.1], "max_iter": [5]}},
    }))
    bundle = resolve(sources, "dev", {"conf": str(conf), "volume_root": str(volume),
                                      "model_name": MODEL, "experiment": "prizeflow-bundle"})
    job = bundle.jobs[JOB]
    validate_job(job)
    values = {**parameter_defaults(job), "source": str(corpus), "top": "3"}

    summaries = {}
    for task in task_order(job):
        arguments = expand_dynamic(task["python_wheel_task"]["parameters"], values, RUN_ID)
        code = cli.main(arguments)
        captured = capsys.readouterr()
        assert code == 0, f"{task['task_key']} exited {code}:\n{captured.err[-3000:]}"
        summaries[task["task_key"]] = json.loads(captured.out.strip().splitlines()[-1])
    assert list(summaries) == list(SCHEDULED)

    ingested = summaries["ingest"]
    assert ingested["ratings"] == generated["ratings"] == 30_000
    assert ingested["quarantined"] == 0
    assert (volume / "lake" / "ratings").is_dir()

    trained = summaries["train"]
    assert trained["grid_points"] == 1
    assert trained["test_rmse"] < trained["baselines"]["bias"]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(trained["run_id"])
    assert run.data.tags["prizeflow.pipeline_run"] == RUN_ID
    assert client.get_experiment(run.info.experiment_id).name == "prizeflow-bundle"

    registered = summaries["register"]
    assert registered["model_name"] == MODEL
    assert registered["version"] == 1 and registered["alias"] == "champion"
    assert registered["train_run_id"] == trained["run_id"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"

    recommended = summaries["recommend"]
    assert recommended["model_version"] == 1 and recommended["top"] == 3
    root = str(volume / "lake")
    table = lake.read(spark, lake.table_path(root, "recommendations"))
    raters = lake.read(spark, lake.table_path(root, "ratings")).select("user_id").distinct()
    per_user = table.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"),
                                            F.min("rank").alias("first"),
                                            F.max("rank").alias("last"))
    counts = per_user.agg(F.count(F.lit(1)).alias("users"), F.min("n").alias("fewest"),
                          F.max("n").alias("most"), F.min("first").alias("first"),
                          F.max("last").alias("last")).first()
    assert counts["users"] == recommended["users"] == raters.count()
    assert counts["fewest"] == counts["most"] == 3 and (counts["first"], counts["last"]) == (1, 3)
    assert table.count() == recommended["rows"] == 3 * recommended["users"]
