"""The Databricks notebooks: source format, parameters checked before any work, and every notebook
executed end to end in order (ingest, train, register, explore) on a small generated corpus, with
the local stand-ins for dbutils and display."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest

from prizeflow.generate import generate_corpus, make_spec

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT / "notebooks").glob("*.py"))
CELL = "# COMMAND ----------"


def test_the_four_notebooks_are_there():
    assert [n.name for n in NOTEBOOKS] == ["01_ingest.py", "02_train.py", "03_register.py",
                                           "04_explore.py"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_databricks_source_format(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# Databricks notebook source"
    cells = text.split(f"\n{CELL}\n")
    assert len(cells) >= 3 and all(cell.strip() for cell in cells)
    # The first cell is markdown: a title and what the notebook does.
    assert re.match(r"# MAGIC %md\n# MAGIC # prizeflow", cells[0].split("\n", 1)[1])
    # Every MAGIC line belongs to a magic cell, so the file stays plain Python elsewhere.
    for cell in cells[1:]:
        magic = [line.startswith("# MAGIC") for line in cell.strip().splitlines()]
        assert all(magic) or not any(magic), cell
    compile(text, str(path), "exec")
    assert "sys.path" not in text and "from prizeflow import" in text
    assert "notebook.read_widgets(" in text  # parameters are widgets, read and checked first


def test_parameters_are_checked_before_any_work(monkeypatch):
    monkeypatch.delenv("PRIZEFLOW_WIDGET_SOURCE", raising=False)
    with pytest.raises(ValueError, match="widget 'source' is empty"):
        runpy.run_path(str(PROJECT / "notebooks" / "01_ingest.py"), run_name="__main__")
    monkeypatch.setenv("PRIZEFLOW_WIDGET_SOURCE", "/somewhere")
    monkeypatch.setenv("PRIZEFLOW_WIDGET_FORMAT", "parquet")
    with pytest.raises(ValueError, match=r"widget 'format': 'parquet' is not one of"):
        runpy.run_path(str(PROJECT / "notebooks" / "01_ingest.py"), run_name="__main__")
    monkeypatch.setenv("PRIZEFLOW_WIDGET_DATA_VERSION", "latest")
    with pytest.raises(ValueError, match="widget 'data_version' must be a Delta version"):
        runpy.run_path(str(PROJECT / "notebooks" / "02_train.py"), run_name="__main__")
    monkeypatch.setenv("PRIZEFLOW_WIDGET_CONF", "staging")
    with pytest.raises(ValueError, match="conf profile 'staging' not found"):
        runpy.run_path(str(PROJECT / "notebooks" / "03_register.py"), run_name="__main__")


def _run_notebook(name: str, monkeypatch, widgets: dict[str, str]) -> dict:
    for key, value in widgets.items():
        monkeypatch.setenv(f"PRIZEFLOW_WIDGET_{key.upper()}", value)
    return runpy.run_path(str(PROJECT / "notebooks" / name), run_name="__main__")


@pytest.mark.spark
@pytest.mark.mlflow
@pytest.mark.deploy
def test_every_notebook_runs_end_to_end(spark, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    generated = generate_corpus(make_spec(corpus, ratings=20000, users=500, movies=120, seed=21))
    figures = tmp_path / "figures"
    monkeypatch.setenv("PRIZEFLOW_DISPLAY_DIR", str(figures))
    monkeypatch.chdir(PROJECT)  # the `local` profile is found in ./conf, as from a checkout
    common = {"conf": "local", "overrides": "; ".join([
        f"lake.root={tmp_path / 'lake'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "train.grid.rank=[4, 8]", "train.grid.reg_param=[0.1]", "train.grid.max_iter=[5]",
        "train.num_blocks=2", "train.log_spark_model=false"])}

    ingest = _run_notebook("01_ingest.py", monkeypatch, {**common, "source": str(corpus)})
    ingested = json.loads(ingest["dbutils"].notebook.exit_value)
    assert ingested["command"] == "ingest" and ingested["ratings"] == generated["ratings"] == 20000
    assert ingested["quarantined"] == 0

    train = _run_notebook("02_train.py", monkeypatch, {**common, "data_version": ""})
    trained = json.loads(train["dbutils"].notebook.exit_value)
    assert trained["grid_points"] == 2 and trained["data_version"] == ingested["delta_versions"]["ratings"]
    assert trained["test_rmse"] < trained["baselines"]["bias"]

    register = _run_notebook("03_register.py", monkeypatch, {**common, "run_id": ""})
    registered = json.loads(register["dbutils"].notebook.exit_value)
    assert registered["train_run_id"] == trained["run_id"]
    assert registered["version"] == 1 and registered["alias"] == "champion"

    explore = _run_notebook("04_explore.py", monkeypatch, {**common, "run_id": trained["run_id"]})
    distribution = explore["distribution"]
    assert distribution["ratings"].sum() == 20000
    assert distribution["share"].sum() == pytest.approx(1.0)
    assert list(distribution["rating"]) == sorted(distribution["rating"])
    run, points = explore["run"], explore["points"]
    assert len(points) == 2
    assert min(r.validation_rmse for r in points) == pytest.approx(trained["validation_rmse"])
    assert run.run_id == trained["run_id"]
    assert run.test_rmse == pytest.approx(trained["test_rmse"])
    assert run.lift_pct == pytest.approx(trained["lift_pct"])
    saved = sorted(p.name for p in figures.glob("*.png"))
    assert saved == ["00_rating_distribution_20_000_ratings.png",
                     "01_validation_rmse_residual_als.png",
                     "02_model_vs_baselines_lower_is_better.png",
                     "03_lift_baseline_model_baseline.png"]
