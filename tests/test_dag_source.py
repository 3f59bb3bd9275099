"""The DAG's files as source, without Airflow (the DAG in a real Airflow is test_airflow_dag.py,
`make test-deploy`): what runs in Airflow's venv imports neither prizeflow nor pyspark."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["prizeflow_dag.py", "prizeflow_params.py"])
def test_dag_files_do_not_import_prizeflow_or_pyspark(name):
    """The DAG and the parameter check it loads by path run in Airflow's venv, where neither
    is (or should be) importable."""
    tree = ast.parse((PROJECT / "dags" / name).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules, "no import found: the parse is not looking at the DAG's code"
    assert not {m for m in modules if m and m.split(".")[0] in {"prizeflow", "pyspark"}}
