"""What a DAG run's parameters may change (dags/prizeflow_params.py, the check every DAG task
runs before its spark-submit): tuning keys yes; another tracking server, lake, Spark server, jars
or JVM options only when the deployment allows them; a `conf` only from the deployment's config
folder. Pure Python: the module imports nothing from Airflow."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("prizeflow_params",
                                               PROJECT / "dags" / "prizeflow_params.py")
params = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(params)


@pytest.mark.parametrize("assignment", [
    "mlflow.tracking_uri=http://attacker.example.com:5000",
    "mlflow.registry_uri=databricks", "lake.root=s3a://other-bucket/lake",
    "spark.remote=sc://attacker.example.com:15002",
    "spark.conf.spark.driver.extraJavaOptions=-javaagent:/tmp/a.jar",
    "spark.conf.spark.hadoop.fs.defaultFS=hdfs://elsewhere", "spark.packages=[evil:evil:1]",
    "spark.delta_jars=[/tmp/evil.jar]", "ingest.follow_external_links=true"])
def test_overrides_that_point_elsewhere_are_refused(assignment):
    with pytest.raises(params.ParameterError) as caught:
        params.check_overrides([assignment], environ={})
    message = str(caught.value)
    key = assignment.split("=")[0]
    assert "\n" not in message and repr(key) in message and params.ALLOWED_ENV in message
    # The value (which may hold a credential) is not repeated.
    assert assignment.split("=", 1)[1] not in message


def test_tuning_overrides_pass_and_a_deployment_may_allow_more():
    tuning = ["train.grid.rank=[8]", "split.method=hash", "data.version=3",
              "spark.conf.spark.sql.shuffle.partitions=4", "ingest.remove_missing=true"]
    assert params.check_overrides(tuning, environ={}) == tuning
    moved = ["lake.root=/data/test-lake", "mlflow.tracking_uri=sqlite:///t.db"]
    environ = {params.ALLOWED_ENV: "lake.root, mlflow.tracking_uri"}
    assert params.check_overrides(moved, environ=environ) == moved
    with pytest.raises(params.ParameterError, match="'mlflow.registry_uri'"):
        params.check_overrides(["mlflow.registry_uri=x"], environ=environ)
    with pytest.raises(params.ParameterError, match="not dotted.name=value"):
        params.check_overrides(["train.grid.rank"], environ={})


def test_conf_must_be_a_file_in_the_deployment_config_folder(tmp_path):
    home = tmp_path / "home"
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "local.yaml").write_text("lake:\n  root: lake\n")
    outside = tmp_path / "evil.yaml"
    outside.write_text("mlflow:\n  tracking_uri: http://attacker\n")
    (home / "conf" / "link.yaml").symlink_to(outside)
    assert params.check_conf(str(home / "conf" / "local.yaml"), home, {}) == str(
        (home / "conf" / "local.yaml").resolve())
    assert params.check_conf("local.yaml", home, {}).endswith("/conf/local.yaml")
    for conf in (str(outside), str(home / "conf" / "link.yaml"), "../../evil.yaml"):
        with pytest.raises(params.ParameterError, match="is not inside the deployment's config"):
            params.check_conf(conf, home, {})
    with pytest.raises(params.ParameterError, match="is not a file"):
        params.check_conf("missing.yaml", home, {})
    # A deployment that keeps its configs elsewhere says so.
    assert params.check_conf(str(outside), home, {params.CONF_DIR_ENV: str(tmp_path)}) == str(
        outside.resolve())
