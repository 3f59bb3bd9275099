"""Registry, serving and the whole pipeline: champion/challenger gating both ways, re-scoring on a
new data version, the Spark-free pyfunc, recommendations, and `prizeflow run` twice in a row."""

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from prizeflow import ingestion, recommending, registry, scoring, training
from prizeflow import pipeline

from conftest import copy_lake, fork_lake, head_commit, pyfunc_on_test, rmse, table, write

pytestmark = [pytest.mark.spark, pytest.mark.mlflow]

# Weak but better than its bias baseline (a model that is not is registered without an alias:
# test_registry_gate.py): two ALS iterations at rank 2, no neighbourhood.
WEAK = {"kind": ["residual"], "rank": [2], "reg_param": [0.1], "max_iter": [2], "bias_reg": [5.0],
        "neighbours": False}
GOOD = {"kind": ["residual"], "rank": [8], "reg_param": [0.1], "max_iter": [6], "bias_reg": [5.0]}
# Better than its bias baseline, worse than GOOD's blend: ALS alone.
MEDIUM = {**GOOD, "neighbours": False}


def _with_grid(config, grid):
    grid = dict(grid)
    neighbours = grid.pop("neighbours", True)
    # No refit on train + validation: half the fits, and nothing here is about the refit.
    return config.override("train.num_blocks=2", "train.log_spark_model=false",
                           "train.refit_on_validation=false",
                           f"train.neighbours.enabled={str(neighbours).lower()}",
                           *[f"train.grid.{axis}={values}" for axis, values in grid.items()])


def _train(spark, config, grid):
    return training.train(spark, _with_grid(config, grid)).summary()


def _register(spark, config):
    return registry.register(spark, config)


@pytest.fixture(scope="module")
def lake(small_lake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    return {"tmp": tmp, "corpus": small_lake["corpus"], "config": copy_lake(small_lake, tmp),
            "ingested": small_lake["ingest"]}


def _run(spark, config, grid, source):
    return pipeline.run(spark, _with_grid(config, grid), str(source))


@pytest.fixture(scope="module")
def history(spark, lake, uses_mlflow):
    """`prizeflow run` with a weak grid -> champion; a good model -> beats it; `prizeflow run`
    with the weak grid again (nothing new to ingest) -> challenger."""
    config = lake["config"]
    first = _run(spark, config, WEAK, lake["corpus"])
    good = _train(spark, config, GOOD)
    steps = [(first["train"], first["register"]), (good, _register(spark, config))]
    again = _run(spark, config, WEAK, lake["corpus"])
    steps.append((again["train"], again["register"]))
    return {"steps": steps, "runs": (first, again)}


def test_run_chains_the_steps_and_twice_in_a_row_changes_nothing_it_should_not(lake, history):
    first, again = history["runs"]
    assert first["ingest"]["files_ingested"] == 0  # the copied lake had them all already
    assert again["ingest"]["files_ingested"] == 0 and again["ingest"]["files_unchanged"] > 0
    for summary in (first, again):
        assert {"ingest", "train", "register"} <= set(summary)
        assert summary["test_rmse"] == summary["train"]["test_rmse"] == summary["register"]["test_rmse"]
        assert summary["version"] == summary["register"]["version"]
        assert set(summary["lift_pct"]) == {"global_mean", "bias"}
        assert set(summary["register"]["baselines_left_out"]) == {"cinematch"}
    # Same data, same config: the same RMSE again.
    assert again["test_rmse"] == pytest.approx(first["test_rmse"], abs=1e-6)
    assert (first["alias"], again["alias"]) == ("champion", "challenger")


def test_gating_moves_champion_only_on_a_better_rmse(lake, history):
    (weak, first), (good, second), (weak_again, third) = history["steps"]
    assert first["version"] == 1 and first["alias"] == "champion"
    assert first["champion_rmse_before"] is None
    assert good["test_rmse"] < weak["test_rmse"]
    assert second["alias"] == "champion" and second["version"] == 2
    assert second["champion_rmse_before"] == pytest.approx(weak["test_rmse"], abs=1e-6)
    assert third["alias"] == "challenger" and third["version"] == 3
    assert third["champion_rmse_before"] == pytest.approx(good["test_rmse"], abs=1e-6)
    assert not third["champion_rescored"]  # same data version and split: exact metrics compared
    assert (first["gate"], second["gate"], third["gate"]) == ("champion", "champion", "challenger")
    assert third["lift_pct"] == pytest.approx(weak_again["lift_pct"])

    mlflow.set_tracking_uri(lake["config"].mlflow.tracking_uri)
    client = MlflowClient()
    name = lake["config"].mlflow.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "3"
    champion = client.get_model_version(name, "2")
    assert float(champion.tags["test_rmse"]) == pytest.approx(good["test_rmse"], abs=1e-6)
    assert champion.tags["train_run_id"] == good["run_id"]
    assert champion.tags["data_version"] == str(good["data_version"])
    assert float(champion.tags["lift_pct_bias"]) == pytest.approx(
        good["lift_pct"]["bias"], abs=1e-3)
    assert "lift_pct_cinematch" not in champion.tags
    assert champion.tags["lift_left_out_cinematch"].startswith("the test set holds ")
    assert "No lift vs cinematch: the test set holds" in champion.description
    assert champion.tags["best_rank"] == "8"
    assert champion.tags["git_commit"] == head_commit()
    assert "test RMSE" in champion.description


def test_champion_pyfunc_serves_int32_int64_and_unknown_ids(lake, history):
    good = history["steps"][1][0]
    mlflow.set_tracking_uri(lake["config"].mlflow.tracking_uri)
    name = lake["config"].mlflow.registered_model
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    factors = model.unwrap_python_model().model
    users, movies = factors.user_ids[:50], factors.movie_ids[np.arange(50) % len(factors.movie_ids)]
    as64 = model.predict(pd.DataFrame({"user_id": users.astype(np.int64),
                                       "movie_id": movies.astype(np.int64)}))
    as32 = model.predict(pd.DataFrame({"user_id": users.astype(np.int32),
                                       "movie_id": movies.astype(np.int32)}))
    assert np.allclose(np.asarray(as64), np.asarray(as32)) and len(as64) == 50
    unknown = model.predict(pd.DataFrame({"user_id": np.array([users[0], 10**8, 10**8]),
                                          "movie_id": np.array([10**6, movies[0], 10**6])}))
    # An unknown id has no factor term: without a history what is left is the baseline of the
    # known side, through the intercept and baseline weight learned for requests with no history.
    baseline = np.array([factors.mean + factors.user_bias[0],
                         factors.mean + factors.movie_bias[0], factors.mean])
    assert factors.neighbourhood is not None  # GOOD is residual ALS: the champion is a blend
    intercept, on_baseline = factors.neighbourhood.weights_without_history[:2]
    assert np.allclose(np.asarray(unknown), np.clip(intercept + on_baseline * baseline, 1, 5))
    assert good["split_method"] == "probe"


def test_pyfunc_loads_in_a_process_without_spark(lake, history):
    name = lake["config"].mlflow.registered_model
    code = (
        "import sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{name}@champion')\n"
        "out = m.predict(pd.DataFrame({'user_id': [1, 2], 'movie_id': [1, 2]}))\n"
        # MLflow may import pyspark's Python modules for type checks; no JVM may start (and
        # none could: java is off the PATH).
        "gateway = sys.modules['pyspark'].SparkContext._gateway if 'pyspark' in sys.modules "
        "else None\n"
        "assert gateway is None, 'a JVM was started'\n"
        "print(list(out))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": lake["config"].mlflow.tracking_uri,
           "JAVA_HOME": "/nonexistent", "PATH": os.path.dirname(sys.executable)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(values) == 2 and all(1 <= v <= 5 for v in values)


def test_recommendations_skip_rated_and_qualifying_movies_and_are_ranked(spark, lake, history):
    config = lake["config"]
    summary = recommending.recommend(spark, config, top=5, alias="champion")
    recs = table(spark, config, "recommendations")
    ratings = table(spark, config, "ratings")
    qualifying = table(spark, config, "qualifying")
    assert summary["model_version"] == 2 and summary["top"] == 5
    assert summary["rows"] == recs.count() == summary["users"] * 5
    assert summary["users"] == ratings.select("user_id").distinct().count()
    assert recs.join(ratings, ["user_id", "movie_id"], "left_semi").count() == 0
    # A qualifying pair is a movie the user rated (the rating hidden): not offered either,
    # though from the ratings alone the same model would offer some of them.
    assert recs.join(qualifying, ["user_id", "movie_id"], "left_semi").count() == 0
    model, _, _, _, buckets = recommending.registered_model_and_history(spark, config, "champion")
    from_ratings = scoring.top_n(model, scoring.user_frame(spark, model),
                                 ratings.select("user_id", "movie_id", "rating", "rated_on"), 5,
                                 buckets)
    assert from_ratings.join(qualifying, ["user_id", "movie_id"], "left_semi").count() > 0
    rows = recs.orderBy("user_id", "rank").collect()
    by_user = {}
    for r in rows:
        by_user.setdefault(r.user_id, []).append(r)
    for user_rows in by_user.values():
        assert [r.rank for r in user_rows] == [1, 2, 3, 4, 5]
        scores = [r.predicted_rating for r in user_rows]
        assert scores == sorted(scores, reverse=True)


def test_new_data_version_rescores_the_champion(spark, lake, history, tmp_path):
    config = fork_lake(lake["config"], tmp_path)
    extra = tmp_path / "more"
    write(extra / "training_set" / "mv_0000777.txt",
          "777:\n" + "".join(f"{u},{u % 5 + 1},2005-07-01\n" for u in range(1, 201)))
    ingestion.ingest(spark, config, str(extra), "netflix")
    weak = _train(spark, config, MEDIUM)
    assert weak["data_version"] > history["steps"][1][0]["data_version"]
    result = _register(spark, config)
    assert result["champion_rescored"] and result["alias"] == "challenger"
    # The champion's RMSE on the new test set, from the pyfunc given each user's history in the
    # request (not through register's Spark scoring).
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{config.mlflow.registered_model}@champion")
    at_weak = config.override(f"data.version={weak['data_version']}")
    test, with_history, _ = pyfunc_on_test(spark, at_weak, champion, refit=False)
    assert result["champion_rmse_before"] == pytest.approx(rmse(test["rating"], with_history),
                                                           abs=1e-9)


@pytest.mark.parametrize("part", ["code", "arrays"])
def test_a_tampered_model_is_refused_before_its_code_runs(spark, lake, history, tmp_path, part):
    """The attack: someone who can write the artifact store changes the champion's files: its
    code (a line that runs on import, here writing a marker file) or its arrays. Every load
    refuses it in one line naming the version, before any of its code runs; `register`'s check
    of a run's model against the digest train recorded fails the same way. (Last in this
    module: the files are put back after.)"""
    from pathlib import Path

    from prizeflow import model_integrity

    config = lake["config"]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    client = MlflowClient()
    name = config.mlflow.registered_model
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.tags["train_run_id"])
    digest = champion.tags[model_integrity.DIGEST_TAG]
    assert digest.startswith("sha256:") and digest == run.data.params["model_digest"]
    stored = Path(client.get_model_version_download_uri(name, champion.version)
                  .removeprefix("file://"))
    marker = tmp_path / "ran.txt"
    target = stored / ("served_model.py" if part == "code" else "artifacts/factors.npz")
    original = target.read_bytes()
    try:
        if part == "code":
            target.write_bytes(f"open({str(marker)!r}, 'w').write('ran')\n".encode() + original)
        else:
            target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(model_integrity.ModelIntegrityError) as caught:
            registry.load_model(name, "champion")
        message = str(caught.value)
        assert "\n" not in message and f"model version {champion.version} of {name!r}" in message
        assert "changed after it was logged" in message
        with pytest.raises(model_integrity.ModelIntegrityError):
            recommending.recommend(spark, config, top=3, alias="champion")
        with pytest.raises(model_integrity.ModelIntegrityError, match="train run"):
            model_integrity.check(run.data.params["model_digest"],
                                  model_integrity.digest_of(champion.source),
                                  f"the model of train run {run.info.run_id}")
        # The serving helper (`make serve`), as a process: exit 1, one line, nothing copied out.
        served = subprocess.run(
            [sys.executable, "-m", "prizeflow.model_integrity", f"{name}@champion",
             str(tmp_path / "copy")], capture_output=True, text=True, timeout=300,
            env={**os.environ, "MLFLOW_TRACKING_URI": config.mlflow.tracking_uri})
        assert served.returncode == 1 and served.stdout == ""
        assert served.stderr.strip().splitlines()[-1].startswith(
            f"prizeflow: error: ModelIntegrityError: model version {champion.version} of {name!r}")
        assert not marker.exists()
    finally:
        target.write_bytes(original)
    model, version = registry.load_model(name, "champion")
    assert version == int(champion.version) and len(model.user_ids) > 0
    served = subprocess.run(
        [sys.executable, "-m", "prizeflow.model_integrity", f"{name}@champion",
         str(tmp_path / "copy")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": config.mlflow.tracking_uri})
    assert served.returncode == 0 and (Path(served.stdout.strip()) / "MLmodel").is_file()
    assert not marker.exists()


def test_predict_writes_the_prize_file_and_tables_of_pairs(spark, lake, history, tmp_path):
    """`prizeflow predict --qualifying --out FILE`: the qualifying file's shape line for line,
    each rating replaced by the champion's prediction (as its pyfunc gives it with the user's
    ratings as history), clipped to 1..5; the same predictions into a Delta table; any table
    of pairs too."""
    from prizeflow import lake as lakes
    from prizeflow.errors import JobError
    from prizeflow.pyfunc import HISTORY_MOVIES, HISTORY_RATINGS

    config = lake["config"]
    out = tmp_path / "predictions.txt"
    summary = pipeline.predict(spark, config, qualifying=True, out=str(out))
    source = (lake["corpus"] / "qualifying.txt").read_text().splitlines()
    written = out.read_text().splitlines()
    assert len(written) == len(source) > 100
    pairs, values, movie = [], [], None
    for asked, answer in zip(source, written):
        if asked.endswith(":"):
            assert answer == asked
            movie = int(asked[:-1])
            continue
        assert len(answer.split(".")[1]) == 3 and 1.0 <= float(answer) <= 5.0, answer
        pairs.append((int(asked.split(",")[0]), movie))
        values.append(float(answer))
    headers = sum(line.endswith(":") for line in source)
    assert summary["model_version"] == 2 and summary["movies"] == headers
    assert summary["predictions"] == summary["qualifying_pairs"] == len(pairs)
    assert summary["qualifying_pairs"] == table(spark, config, "qualifying").count()
    assert summary["qualifying_lines_quarantined"] == 0

    ratings = table(spark, config, "ratings").select("user_id", "movie_id", "rating").toPandas()
    lists = {u: (g["movie_id"].tolist(), g["rating"].astype(float).tolist())
             for u, g in ratings.groupby("user_id")}
    frame = pd.DataFrame(pairs, columns=["user_id", "movie_id"])
    frame[HISTORY_MOVIES] = [lists.get(u, ([], []))[0] for u in frame["user_id"]]
    frame[HISTORY_RATINGS] = [lists.get(u, ([], []))[1] for u in frame["user_id"]]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{config.mlflow.registered_model}@champion")
    expected = np.clip(np.asarray(pyfunc.predict(frame), dtype=np.float64), 1.0, 5.0)
    assert np.abs(np.asarray(values) - expected).max() <= 0.0005 + 1e-6
    assert np.std(values) > 0.1  # not one constant

    as_table = str(tmp_path / "qualifying-predictions")
    in_table = pipeline.predict(spark, config, qualifying=True, out_table=as_table)
    rows = lakes.read(spark, as_table).orderBy("source_file", "line_no").toPandas()
    assert in_table["rows"] == len(rows) == len(pairs)
    assert list(zip(rows["user_id"], rows["movie_id"])) == pairs
    assert np.abs(rows["prediction"].to_numpy() - expected).max() <= 1e-6
    assert set(rows["model_version"]) == {2}

    probe = lakes.table_path(config.lake.root, "probe")
    from_pairs = pipeline.predict(spark, config, pairs=probe, out_table=as_table)
    assert from_pairs["rows"] == table(spark, config, "probe").count()
    scored = lakes.read(spark, as_table)
    assert scored.where("prediction IS NULL OR prediction < 1 OR prediction > 5").count() == 0
    assert set(scored.columns) >= {"user_id", "movie_id", "prediction", "model_version"}

    no_users = str(tmp_path / "movies-only")
    table(spark, config, "probe").select("movie_id").write.format("delta").save(no_users)
    with pytest.raises(JobError, match=r"^--pairs .*movies-only: no column user_id \(it has "
                                       r"movie_id\)$"):
        pipeline.predict(spark, config, pairs=no_users, out_table=as_table)
