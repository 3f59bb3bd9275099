"""Deployment pieces that need no cluster: the conf profiles, the notebook helpers, and the
package's source when it is imported from a --py-files zip."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prizeflow import notebook
from prizeflow.config import ConfigError, load_config
from prizeflow.tracking import registry_uri

PROJECT = Path(__file__).resolve().parents[1]


PROFILES = sorted(path.stem for path in (PROJECT / "conf").glob("*.yaml"))


def test_the_profiles_are_the_documented_ones():
    assert PROFILES == ["cluster.template", "databricks", "full", "local", "standalone"]


def _restated(profile: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys of a profile set to the value they have anyway (free mappings excepted)."""
    found = []
    for key, value in profile.items():
        if isinstance(value, dict) and key != "conf":
            found += _restated(value, defaults[key], f"{prefix}{key}.")
        elif key != "conf" and defaults[key] == value:
            found.append(prefix + key)
    return found


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_is_an_overlay_of_the_defaults(name):
    import yaml

    profile = yaml.safe_load((PROJECT / "conf" / f"{name}.yaml").read_text())
    assert _restated(profile, load_config(None).as_dict()) == []
    # and what it does set, it changes
    assert load_config(PROJECT / "conf" / f"{name}.yaml") != load_config(None)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_validates(name):
    config = load_config(PROJECT / "conf" / f"{name}.yaml")
    assert config.spark.app_name == "prizeflow"


def test_the_full_corpus_profile_leaves_parallelism_to_the_session():
    config = load_config(PROJECT / "conf" / "full.yaml")
    assert config.train.num_blocks is None
    assert "spark.sql.shuffle.partitions" not in config.spark.conf
    assert config.train.neighbours.enabled is True


@pytest.mark.parametrize("name", ["local", "full"])
def test_local_mode_profiles_launch_the_driver_with_the_serial_collector(name):
    # In local mode the driver JVM runs every task; G1 cost local[2] its speed-up (BENCHMARKS.md).
    from prizeflow.spark import LOG4J_PROPERTY, session_settings

    config = load_config(PROJECT / "conf" / f"{name}.yaml")
    assert config.spark.master.startswith("local")
    options = session_settings(config, "4.1.1")["spark.driver.extraJavaOptions"].split()
    assert options[0] == "-XX:+UseSerialGC"
    assert options[1].startswith(f"-D{LOG4J_PROPERTY}=file:")


def test_databricks_profile_uses_the_runtime_and_unity_catalog():
    config = load_config(PROJECT / "conf" / "databricks.yaml")
    assert config.spark.delta_source == "builtin" and config.spark.master is None
    assert config.mlflow.tracking_uri == "databricks"
    assert config.lake.root.startswith("/Volumes/")
    assert config.mlflow.registered_model.count(".") == 2  # catalog.schema.model
    assert registry_uri(config.mlflow) is None  # MLflow's default there: databricks-uc
    local = load_config(PROJECT / "conf" / "local.yaml")
    assert registry_uri(local.mlflow) == local.mlflow.tracking_uri


def test_local_widgets_defaults_environment_and_choices():
    dbutils = notebook.LocalDbutils(environ={"PRIZEFLOW_WIDGET_SOURCE": " /data/netflix "})
    values = notebook.read_widgets(dbutils, {"source": "", "format": "auto", "top": "10"},
                                   choices={"format": ["auto", "netflix"]}, required=("source",))
    assert values == {"source": "/data/netflix", "format": "auto", "top": "10"}
    with pytest.raises(ValueError, match="widget 'missing' is not defined"):
        dbutils.widgets.get("missing")
    with pytest.raises(ValueError, match="widget 'source' is empty"):
        notebook.read_widgets(notebook.LocalDbutils(environ={}), {"source": ""},
                              required=("source",))
    dbutils.notebook.exit('{"ok": 1}')
    assert dbutils.notebook.exit_value == '{"ok": 1}'


def test_notebook_config_takes_a_profile_or_a_path_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT / "notebooks")  # as on Databricks: conf/ is in the parent folder
    config = notebook.notebook_config("local", "lake.root=/x; train.grid.rank=[3]\nsplit.seed=9")
    assert config.lake.root == "/x" and config.train.grid.rank == [3]
    assert config.split.seed == 9
    own = tmp_path / "mine.yaml"
    own.write_text("lake:\n  root: /y\n")
    assert notebook.notebook_config(str(own)).lake.root == "/y"
    with pytest.raises(ConfigError, match="unknown config key 'lake.depth'"):
        notebook.notebook_config("local", "lake.depth=3")
    with pytest.raises(ConfigError, match="config file not found"):
        notebook.notebook_config(str(tmp_path / "absent.yaml"))


def test_summary_table_flattens_nested_fields():
    table = notebook.summary_table({"command": "run", "lift_pct": {"bias": 7.5}, "version": 2})
    assert table.values.tolist() == [["command", "run"], ["lift_pct.bias", "7.5"],
                                     ["version", "2"]]


def test_package_source_is_extracted_from_a_py_files_zip(tmp_path):
    archive = tmp_path / "prizeflow.zip"
    package = PROJECT / "lib" / "prizeflow"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in package.rglob("*.py"):
            bundle.write(path, path.relative_to(package.parent).as_posix())
    probe = (f"import sys; sys.path.insert(0, {str(archive)!r})\n"
             "import prizeflow, prizeflow.tracking as t\n"
             "assert prizeflow.__file__.startswith(sys.path[0]), prizeflow.__file__\n"
             "with t.package_source() as code:\n"
             "    print(sorted(p.name for p in code.glob('*.py')))\n"
             "    print((code / 'factors.py').read_text() == open("
             f"{str(package / 'factors.py')!r}).read())\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    names, same = result.stdout.strip().splitlines()
    assert names == str(sorted(p.name for p in package.glob("*.py")))
    assert same == "True"
