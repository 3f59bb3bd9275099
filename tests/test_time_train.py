"""`prizeflow train` with the time-aware baseline (``train.time``): the choice of its
regularisation on validation, and every scoring path taking each rating's day the way the run
scored its test set (the pyfunc, the gate's re-scoring, batch predictions, top-N lists)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from prizeflow import data, predicting, scoring, splits, training
from prizeflow.config import load_config

from conftest import copy_lake, rmse, spark_and_numpy_top_n, with_history_lists

pytestmark = [pytest.mark.spark, pytest.mark.mlflow]

SETTINGS = {"train.grid.kind": "[residual]", "train.grid.rank": "[8]",
            "train.grid.reg_param": "[0.1]", "train.grid.max_iter": "[6]",
            "train.grid.bias_reg": "[5]", "train.num_blocks": "2",
            "train.time.enabled": "true", "train.time.bins": "6",
            # One pair: no choice, so time effects even on this corpus (which plants no drift,
            # and where the static baseline would win on validation).
            "train.time.reg_bin": "[5]", "train.time.reg_alpha": "[10]",
            "train.ranking_users": "100"}
COLUMNS = ["user_id", "movie_id", "rating", "rated_on"]


@pytest.fixture(scope="module")
def timed(spark, small_lake, tmp_path_factory, uses_mlflow):
    tmp = tmp_path_factory.mktemp("time-train")
    config = copy_lake(small_lake, tmp)
    merged = load_config(None, [f"{k}={v}" for k, v in SETTINGS.items()])
    config = config.model_copy(update={"train": merged.train})
    summary = training.train(spark, config).summary()
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(summary["model_uri"])
    source = data.load_training_data(spark, config)
    split = data.split_ratings(source, config, data.choose_split_method(config, source))
    # What train scored the test set with after its refit: train + validation, and the
    # qualifying pairs (rating null).
    history = data.with_unrated(splits.part(split, splits.TRAIN, splits.VALIDATION)
                                .select(*COLUMNS), source.unrated)
    test = splits.part(split, splits.TEST).select(*COLUMNS)
    return {"config": config, "summary": summary, "pyfunc": pyfunc,
            "model": pyfunc.unwrap_python_model().model, "history": history, "test": test}


def test_the_run_logs_its_time_regularisation_and_keeps_the_time_effects(timed):
    summary, model = timed["summary"], timed["model"]
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.params["time_effects"] == "True"
    assert float(run.data.params["time_reg_bin"]) == 5.0
    assert run.data.params["time_bins"] == "6"
    assert model.time is not None and model.time.movie_bins.shape == (len(model.movie_ids), 6)
    assert np.abs(model.time.movie_bins).max() > 1e-3
    assert model.user_time.shape == (len(model.user_ids), 2)
    assert np.abs(model.user_time[:, 1]).max() > 1e-4  # the users' drift
    # The Spark ML form would score every rating at one day: not logged.
    assert summary["spark_model_uri"] is None
    assert summary["ranking"]["model"]["users"] > 0
    assert summary["test_rmse"] < summary["baselines"]["bias"] < summary["baselines"]["global_mean"]


def test_the_pyfunc_with_the_dates_reproduces_the_runs_test_rmse(timed):
    test, history = timed["test"].toPandas(), timed["history"].toPandas()
    pyfunc = timed["pyfunc"]
    with_dates = pyfunc.predict(with_history_lists(test, history))
    assert rmse(test["rating"], with_dates) == pytest.approx(timed["summary"]["test_rmse"],
                                                             abs=1e-6)
    # Without the dates every rating sits at the latest day: other numbers.
    undated = pyfunc.predict(with_history_lists(test, history, dates=False))
    assert np.abs(np.asarray(undated) - np.asarray(with_dates)).max() > 1e-3


def test_the_gates_rescoring_reads_the_days_of_test_and_history(spark, timed):
    model, test, history = timed["model"], timed["test"], timed["history"]
    assert scoring.test_rmse(model, test, history, 2) == pytest.approx(
        timed["summary"]["test_rmse"], abs=1e-6)
    undated = scoring.test_rmse(model, test.drop("rated_on"), history, 2)
    assert abs(undated - timed["summary"]["test_rmse"]) > 1e-5


def test_predictions_score_each_pair_at_its_own_date(spark, timed):
    model, history = timed["model"], timed["history"]
    rows = timed["test"].limit(40).toPandas()
    user, movie = int(rows["user_id"][0]), int(rows["movie_id"][0])
    pairs = pd.concat([rows[["user_id", "movie_id", "rated_on"]], pd.DataFrame({
        "user_id": [user, user, user], "movie_id": [movie] * 3,
        "rated_on": [pd.Timestamp("1999-01-02").date(), pd.Timestamp("2005-12-20").date(),
                     None]})], ignore_index=True)
    frame = spark.createDataFrame(pairs, "user_id int, movie_id int, rated_on date")
    got = (predicting.with_predictions(model, scoring.user_frame(spark, model), frame, history,
                                       buckets=4)
           .toPandas())
    assert len(got) == len(pairs) and got["prediction"].notna().all()
    known = history.toPandas()
    days = (pd.to_datetime(known["rated_on"]) - pd.Timestamp("1970-01-01")).dt.days
    asked = (pd.to_datetime(got["rated_on"]) - pd.Timestamp("1970-01-01")).dt.days
    expected = model.predict(got["user_id"], got["movie_id"],
                             (known["user_id"], known["movie_id"], known["rating"], days),
                             days=asked.to_numpy(dtype=float))
    assert got["prediction"].to_numpy() == pytest.approx(expected, abs=1e-6)
    same_pair = got[(got["user_id"] == user) & (got["movie_id"] == movie)]
    assert same_pair["prediction"].round(6).nunique() >= 2  # the date moves the prediction


def test_top_n_in_spark_equals_the_numpy_lists_with_the_history_days(spark, timed):
    model, history = timed["model"], timed["history"]
    got, expected = spark_and_numpy_top_n(spark, model, history, 5, days=True)
    assert len(got) == len(expected) > 0
    assert (got["movie_id"].to_numpy() == expected["movie_id"].to_numpy()).all()
    assert got["predicted_rating"].to_numpy() == pytest.approx(
        expected["predicted_rating"].to_numpy(), abs=1e-5)
    # The history's days matter: at the latest day the residuals, and so the lists, differ.
    _, undated = spark_and_numpy_top_n(spark, model, history, 5, days=False)
    assert np.abs(np.sort(undated["predicted_rating"].to_numpy())
                  - np.sort(expected["predicted_rating"].to_numpy())).max() > 1e-4



def test_two_times_of_one_day_are_one_pair_and_no_row_is_doubled(spark, timed):
    model, history = timed["model"], timed["history"]
    row = timed["test"].first()
    frame = spark.createDataFrame(
        [(row["user_id"], row["movie_id"], "2005-12-20 10:00:00"),
         (row["user_id"], row["movie_id"], "2005-12-20 23:00:00"),
         (row["user_id"], row["movie_id"], "2004-03-01 08:00:00")],
        "user_id int, movie_id int, rated_on string").withColumn(
        "rated_on", F.to_timestamp("rated_on"))
    got = predicting.with_predictions(model, scoring.user_frame(spark, model), frame, history,
                                      buckets=4).toPandas().sort_values("rated_on")
    assert len(got) == 3
    assert got["prediction"].iloc[0] != pytest.approx(got["prediction"].iloc[1], abs=1e-9)
    assert got["prediction"].iloc[1] == pytest.approx(got["prediction"].iloc[2], abs=1e-12)


def test_the_day_terms_weight_is_kept_without_the_implicit_term(spark, timed):
    from dataclasses import replace

    model = timed["model"]
    pipeline = training.Pipeline(spark, timed["config"])
    arrays = (model.neighbourhood.neighbours, model.neighbourhood.similarities)
    bare = replace(model, neighbourhood=None, implicit=None)
    weights = [0.1, 0.9, 0.8, 0.7, 0.6]  # intercept, baseline, factor, neighbour, day
    rebuilt = pipeline.with_neighbourhood(bare, arrays, None, weights, [0.0, 1.0, 1.0])
    assert rebuilt.rule().terms[-1] == ("day_term", 0.6)
    with pytest.raises(ValueError, match="4 blend weights"):
        pipeline.with_neighbourhood(bare, arrays, None, weights[:4], [0.0, 1.0, 1.0])


def _dated_ratings(spark, drift: float, seed: int):
    """(train, validation) of 300 users x 40 movies over 800 days; ``drift``: how much the
    even movies' ratings rise from their first half of the days to their second."""
    rng = np.random.default_rng(seed)
    users, movies = rng.normal(0, 0.4, 301), rng.normal(0, 0.5, 41)
    rows = []
    for user in range(1, 301):
        for movie in rng.choice(np.arange(1, 41), 25, replace=False):
            day = 12000 + int(rng.integers(0, 800))
            shift = drift * (1 if day >= 12400 else -1) / 2 if movie % 2 == 0 else 0.0
            rating = float(np.clip(np.round(3.5 + users[user] + movies[movie] + shift
                                            + rng.normal(0, 0.8)), 1, 5))
            rows.append((user, int(movie), rating, day, int(rng.integers(0, 10))))
    frame = spark.createDataFrame(rows, "user_id int, movie_id int, rating double, day int, "
                                        "fold int")
    return (frame.where("fold > 0").drop("fold").cache(),
            frame.where("fold = 0").drop("fold").cache())


@pytest.mark.parametrize("drift, uses_time", [(2.0, True), (0.0, False)])
def test_validation_chooses_between_the_time_effects_and_the_static_baseline(
        spark, tmp_path, drift, uses_time):
    config = load_config(None, ["train.time.bins=4", "train.time.reg_bin=[2, 20]",
                                "train.time.reg_alpha=[10]", "train.bias_passes=2"])
    pipeline = training.Pipeline(spark, config)
    train, validation = _dated_ratings(spark, drift, seed=31)
    chosen = training._time_regs(pipeline, train, validation, 5.0, 1.0, 5.0)
    assert (chosen is not None) == uses_time
    if uses_time:
        assert chosen.bins == 4 and chosen.reg_bin in (2.0, 20.0)
