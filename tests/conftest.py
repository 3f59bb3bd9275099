"""One Spark session for the whole run (local[2], few shuffle partitions, UI off, temp
warehouse, Delta on) and helpers to run jobs in-process against a temp lake."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from prizeflow.config import Config, load_config

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
    # The session's JVM lives for the whole suite (15+ minutes): the optimising JIT tier pays
    # for itself (C1 only made a warm 2,000-line ingest 42 s instead of 28-31 s), and the
    # throughput collector leaves both cores to the tasks instead of concurrent GC threads.
    "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
}


def pytest_collection_modifyitems(items):
    """A test that starts Spark is an integration test, whatever its file says: anything that
    uses the ``spark`` fixture, directly or through another fixture, gets the mark, so
    ``make test-fast`` (``-m "not integration"``) never starts a JVM."""
    integration = pytest.mark.integration
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
                "integration"):
            item.add_marker(integration)


def head_commit() -> str:
    """The checkout's commit as git reports it: what runs must be tagged with."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout.strip()


def make_config(tmp: Path, **sections) -> Config:
    overrides = [f"lake.root={tmp / 'lake'}",
                 f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                 "spark.master=local[2]"]
    overrides += [f"spark.conf.{k}={v}" for k, v in TEST_SPARK_CONF.items()]
    for section, values in sections.items():
        overrides += [f"{section}.{k}={v}" for k, v in values.items()]
    return load_config(None, overrides)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from prizeflow.spark import get_spark

    base = tmp_path_factory.mktemp("spark")
    config = make_config(base)
    config.spark.conf["spark.sql.warehouse.dir"] = str(base / "warehouse")
    config.spark.conf["spark.local.dir"] = str(base / "local")
    session = get_spark(config)
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow-env.db'}")


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def ingest(spark):
    """Run the ingest task in-process: ``ingest(config, source, fmt='auto')`` -> summary."""
    from prizeflow import ingestion

    def run(config: Config, source, fmt: str = "auto") -> dict:
        return ingestion.ingest(spark, config, str(source), fmt)

    return run


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def table(spark, config: Config, name: str):
    from prizeflow.lake import read, table_path

    return read(spark, table_path(config.lake.root, name))


@pytest.fixture(scope="session")
def small_lake(spark, tmp_path_factory):
    """A generated Netflix-layout corpus (30,000 ratings, 600 users, 150 movies, with a probe)
    ingested once; modules that train copy it with :func:`copy_lake` instead of ingesting again."""
    from prizeflow import ingestion
    from prizeflow.generate import generate_corpus, make_spec

    tmp = tmp_path_factory.mktemp("small-lake")
    corpus = tmp / "corpus"
    generate_corpus(make_spec(corpus, 30_000, users=600, movies=150, seed=5))
    config = make_config(tmp)
    summary = ingestion.ingest(spark, config, str(corpus))
    return {"root": Path(config.lake.root), "corpus": corpus, "ingest": summary}


def copy_lake(small_lake: dict, tmp: Path) -> Config:
    """A private copy of the shared lake (Delta logs hold relative paths, so a copy is a lake)
    and a config pointing at it with its own MLflow store."""
    import shutil

    tmp.mkdir(parents=True, exist_ok=True)
    config = make_config(tmp)
    shutil.copytree(small_lake["root"], config.lake.root)
    return config


def fork_lake(config: Config, tmp: Path) -> Config:
    """A private copy of a module's lake and its SQLite MLflow store (runs and registry), for a
    test that writes: the module's other tests then see the same data whatever the order."""
    import copy
    import shutil

    forked = copy.deepcopy(config)
    forked.lake.root = str(tmp / "lake")
    shutil.copytree(config.lake.root, forked.lake.root)
    store = config.mlflow.tracking_uri.removeprefix("sqlite:///")
    shutil.copyfile(store, tmp / "mlflow.db")
    forked.mlflow.tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return forked


def pyfunc_on_test(spark, config: Config, model, refit: bool = True):
    """(test rows, predictions with each user's history as request columns, predictions without
    a history) of a loaded pyfunc on the test set of ``config``'s split. The history is what
    train scored the test set with: the split's train (+ validation after a refit) ratings."""
    import numpy as np

    from prizeflow import data, splits
    from prizeflow.pyfunc import HISTORY_MOVIES, HISTORY_RATINGS

    source = data.load_training_data(spark, config)
    split = data.split_ratings(source, config, data.choose_split_method(config, source))
    parts = [splits.TRAIN, splits.VALIDATION] if refit else [splits.TRAIN]
    test = splits.part(split, splits.TEST).select("user_id", "movie_id", "rating").toPandas()
    known = splits.part(split, *parts).select("user_id", "movie_id", "rating").toPandas()
    lists = {u: (g["movie_id"].tolist(), g["rating"].astype(float).tolist())
             for u, g in known.groupby("user_id")}
    frame = test[["user_id", "movie_id"]].copy()
    frame[HISTORY_MOVIES] = [lists.get(u, ([], []))[0] for u in frame["user_id"]]
    frame[HISTORY_RATINGS] = [lists.get(u, ([], []))[1] for u in frame["user_id"]]
    with_history = np.asarray(model.predict(frame), dtype=np.float64)
    without = np.asarray(model.predict(frame[["user_id", "movie_id"]]), dtype=np.float64)
    return test, with_history, without


def rmse(truth, predicted) -> float:
    import numpy as np

    diff = np.asarray(truth, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))
