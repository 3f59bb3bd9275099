"""One Spark session for the whole run (local[2], few shuffle partitions, UI off, temp
warehouse, Delta on), helpers to run jobs in-process against a temp lake, and the check of the
``spark`` and ``mlflow`` markers (what they mean: pytest.ini)."""

from __future__ import annotations

import os
import shlex
import shutil
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


SPARK_MARK_OPTIONS = {"process"}


def _marker_problems(item) -> list[str]:
    """What is wrong with one test's ``spark`` and ``mlflow`` markers."""
    problems = []
    fixtures = set(getattr(item, "fixturenames", ()))
    spark_marks = list(item.iter_markers("spark"))
    for mark in spark_marks:
        if mark.args or set(mark.kwargs) - SPARK_MARK_OPTIONS:
            problems.append(f"@pytest.mark.spark takes only process=True, not args {mark.args} "
                            f"kwargs {mark.kwargs}")
    in_process = "spark" in fixtures
    in_child = any(mark.kwargs.get("process") for mark in spark_marks)
    if in_process and not spark_marks:
        problems.append("uses the spark fixture (directly or through another fixture) and is "
                        "not marked spark: add @pytest.mark.spark, or pytestmark = "
                        "pytest.mark.spark when the whole module uses it")
    if spark_marks and not in_process and not in_child:
        problems.append("is marked spark and uses no spark fixture: drop the marker, or, if it "
                        "starts a JVM in a child process, mark it @pytest.mark.spark(process=True)")
    if "uses_mlflow" in fixtures and not item.get_closest_marker("mlflow"):
        problems.append("uses a fixture that writes or reads an MLflow store (it requests "
                        "uses_mlflow) and is not marked mlflow: add @pytest.mark.mlflow")
    return problems


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(items):
    """Markers are written in the test files, never added here: a test that uses the ``spark``
    fixture (directly or through other fixtures) must be marked ``spark``; a test marked
    ``spark`` must use the fixture or be marked ``spark(process=True)`` (it starts a JVM in a
    child process: a command, spark-submit, a server); a test using a fixture that requests
    ``uses_mlflow`` must be marked ``mlflow``. Anything else stops the collection, naming the
    tests."""
    found = {}
    for item in items:
        for problem in _marker_problems(item):
            found.setdefault(f"{item.nodeid.split('[')[0]} {problem}", None)
    if found:
        raise pytest.UsageError("tests with wrong markers (see pytest.ini):\n  "
                                + "\n  ".join(found))


@pytest.fixture(scope="session")
def uses_mlflow():
    """Requested by every fixture that writes or reads a real MLflow store (runs, the registry):
    the tests that use such a fixture must be marked ``mlflow``. Provides nothing."""


@pytest.fixture(scope="session")
def _java_starts(tmp_path_factory):
    """(a JAVA_HOME whose bin/java notes each start in a log and then runs the real java, the
    log)."""
    real = (str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME")
            else shutil.which("java"))
    home = tmp_path_factory.mktemp("java-starts")
    log = home / "started.log"
    (home / "bin").mkdir()
    java = home / "bin" / "java"
    run = f"exec {shlex.quote(real)} \"$@\"" if real else "echo 'java: not found' >&2; exit 127"
    java.write_text(f"#!/bin/sh\necho \"$$ $*\" >> {shlex.quote(str(log))}\n{run}\n")
    java.chmod(0o755)
    return home, log


@pytest.fixture(autouse=True)
def _no_jvm_unless_marked_spark(request, monkeypatch):
    """A test not marked ``spark`` fails if it (or a process it starts) launches a JVM: java is
    found through a stand-in that notes each start. (A JVM started by a module or session
    fixture before this test, or one already running, is not seen.)"""
    if request.node.get_closest_marker("spark"):
        yield
        return
    home, log = request.getfixturevalue("_java_starts")
    log.write_text("")
    monkeypatch.setenv("JAVA_HOME", str(home))
    monkeypatch.setenv("PATH", f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    yield
    started = log.read_text().splitlines()
    if started:
        pytest.fail(f"{request.node.nodeid} is not marked spark and started {len(started)} java "
                    f"process(es), first: java {started[0].split(' ', 1)[-1][:300]}\nmark it "
                    "@pytest.mark.spark(process=True) (or use the spark fixture and mark it "
                    "spark)", pytrace=False)


def head_commit() -> str:
    """The checkout's commit as git reports it: what runs must be tagged with."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout.strip()


def make_config(tmp: Path, **sections) -> Config:
    overrides = [f"lake.root={tmp / 'lake'}",
                 f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                 "spark.master=local[2]",
                 # Top-10 quality is measured where it is tested (test_train, test_ranking):
                 # elsewhere it would add seconds to every train run.
                 "train.ranking_users=0",
                 # The implicit-feedback term is trained and checked where it is tested
                 # (test_implicit, test_train): elsewhere it would add two fits to every run.
                 "train.implicit.enabled=false",
                 # Likewise the time-aware baseline (test_time_effects, test_time_train).
                 "train.time.enabled=false"]
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
    train scored the test set with: the split's train (+ validation after a refit) ratings, and
    the lake's qualifying pairs with a rating of NaN (in N(u), rating unknown)."""
    import numpy as np

    from prizeflow import data, splits
    from prizeflow.pyfunc import HISTORY_MOVIES, HISTORY_RATINGS

    source = data.load_training_data(spark, config)
    split = data.split_ratings(source, config, data.choose_split_method(config, source))
    parts = [splits.TRAIN, splits.VALIDATION] if refit else [splits.TRAIN]
    test = splits.part(split, splits.TEST).select("user_id", "movie_id", "rating").toPandas()
    known = data.with_unrated(splits.part(split, *parts).select("user_id", "movie_id", "rating"),
                              source.unrated).toPandas()
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


def with_history_lists(test, history, dates: bool = True):
    """The pyfunc's input for ``test``'s pairs (pandas): each row's user history from
    ``history`` (pandas: user_id, movie_id, rating, rated_on) as list columns, with the dates
    (the row's ``rated_on`` and ``history_rated_on``) unless ``dates`` is False."""
    import pandas as pd

    from prizeflow.pyfunc import HISTORY_DATES, HISTORY_MOVIES, HISTORY_RATINGS

    lists = {u: g for u, g in history.groupby("user_id")}
    empty = history.iloc[:0]
    frame = test[["user_id", "movie_id"]].copy()
    mine = [lists.get(u, empty) for u in frame["user_id"]]
    frame[HISTORY_MOVIES] = [g["movie_id"].tolist() for g in mine]
    frame[HISTORY_RATINGS] = [g["rating"].astype(float).tolist() for g in mine]
    if dates:
        frame["rated_on"] = pd.to_datetime(test["rated_on"])
        frame[HISTORY_DATES] = [pd.to_datetime(g["rated_on"]).tolist() for g in mine]
    return frame


def spark_and_numpy_top_n(spark, model, history, n: int, days: bool = False, model_of=None):
    """(Spark's top-``n`` lists of every seventh user of ``model`` with ``history`` (a Spark
    frame: user_id, movie_id, rating, rated_on), numpy's ``(model_of or model).top_n`` of the
    same users and history (with the ratings' days when ``days``)), both as pandas frames
    (user_id, rank, movie_id, predicted_rating) sorted by user and rank."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    from prizeflow import scoring

    users = scoring.user_frame(spark, model).where(F.col("user_id") % 7 == 0)
    lists = scoring.top_n(model, users, history, n, buckets=4).toPandas()
    wanted = np.sort(users.toPandas()["user_id"].to_numpy())
    known = history.toPandas()
    known = known[known["user_id"].isin(wanted)]
    owner = np.searchsorted(wanted, known["user_id"].to_numpy())
    order = np.argsort(owner, kind="stable")
    day_numbers = None
    if days:
        day_numbers = ((pd.to_datetime(known["rated_on"]) - pd.Timestamp("1970-01-01")).dt.days
                       .to_numpy(dtype=float)[order])
    who, rank, movie, value = (model_of or model).top_n(
        wanted, owner[order], known["movie_id"].to_numpy()[order],
        known["rating"].to_numpy()[order], n, day_numbers)
    keys = ["user_id", "rank"]
    expected = pd.DataFrame({"user_id": wanted[who], "rank": rank, "movie_id": movie,
                             "predicted_rating": value})
    return (lists.sort_values(keys).reset_index(drop=True),
            expected.sort_values(keys).reset_index(drop=True))
