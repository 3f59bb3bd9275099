"""`prizeflow blend --versions`: two different registered models blended into one, which beats
both on test, is gated like any candidate, and is served, re-scored, batch-scored and ranked
(top-N lists) exactly as its run measured it; and the versions a blend refuses."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from prizeflow import blend_scoring, blending, data, partitions, predicting, recommending, registry
from prizeflow import splits, training
from prizeflow.config import load_config
from prizeflow.model_blend import BlendedModel

from conftest import copy_lake, rmse, spark_and_numpy_top_n, with_history_lists

pytestmark = [pytest.mark.spark, pytest.mark.mlflow]

COMMON = {"train.grid.reg_param": "[0.1]", "train.grid.max_iter": "[6]",
          "train.grid.bias_reg": "[5]", "train.num_blocks": "2",
          "train.refit_on_validation": "false", "train.implicit.enabled": "false",
          "train.time.enabled": "false", "train.ranking_users": "0"}
# Two different models: a residual ALS alone, and a small ALS with the item-item neighbourhood.
MEMBERS = ({"train.grid.kind": "[residual]", "train.grid.rank": "[8]",
            "train.neighbours.enabled": "false"},
           {"train.grid.kind": "[residual]", "train.grid.rank": "[2]",
            "train.neighbours.enabled": "true"})
COLUMNS = ["user_id", "movie_id", "rating", "rated_on"]


def _trained(config, settings):
    merged = load_config(None, [f"{k}={v}" for k, v in {**COMMON, **settings}.items()])
    return config.model_copy(update={"train": merged.train})


@pytest.fixture(scope="module")
def blended(spark, small_lake, tmp_path_factory, uses_mlflow):
    config = copy_lake(small_lake, tmp_path_factory.mktemp("blend"))
    members = []
    for settings in MEMBERS:
        member_config = _trained(config, settings)
        trained = training.train(spark, member_config).summary()
        members.append(registry.register(spark, member_config, trained["run_id"]))
    summary = blending.blend(spark, config, ",".join(str(m["version"]) for m in members))
    source = data.load_training_data(spark, config)
    split = data.split_ratings(source, config, data.choose_split_method(config, source))
    return {"config": config, "members": members, "summary": summary,
            "history": splits.part(split, splits.TRAIN).select(*COLUMNS),
            "test": splits.part(split, splits.TEST).select(*COLUMNS)}


def test_the_blend_of_two_different_models_beats_both_on_test(blended):
    summary, members = blended["summary"], blended["members"]
    versions = [m["version"] for m in members]
    assert summary["blend_of"] == versions
    # Each member scored here as its own run scored its test set.
    for member in members:
        assert summary["member_test_rmse"][member["version"]] == pytest.approx(
            member["test_rmse"], abs=1e-9)
    assert summary["test_rmse"] < min(m["test_rmse"] for m in members)
    # Weights learned on validation give both members a real share.
    weights = summary["weights"]
    assert all(weights[f"v{v}"] > 0.1 for v in versions)


def test_the_blend_goes_through_the_gate_as_one_registered_model(blended):
    summary, members = blended["summary"], blended["members"]
    client = MlflowClient()
    assert summary["version"] == 3 and summary["alias"] == "champion"
    assert summary["champion_rmse_before"] == pytest.approx(min(m["test_rmse"] for m in members))
    assert summary["champion_rescored"] is False  # one test set: the RMSEs compare as they are
    version = client.get_model_version("prizeflow-als", "3")
    assert version.tags["blend_of"] == "1,2" and version.tags["prizeflow.gate"] == "champion"
    assert "Blend of versions v1, v2" in version.description
    run = client.get_run(summary["blend_run_id"])
    first = client.get_run(members[0]["train_run_id"])
    assert run.data.tags["prizeflow.command"] == "blend"
    for name in ("gate.split", "gate.lake", "gate.ratings_table", "data_version"):
        assert run.data.params[name] == first.data.params[name]
    assert float(run.data.params["gate.test_rmse"]) == summary["test_rmse"]
    assert run.data.metrics["lift_pct_bias"] == pytest.approx(
        (run.data.metrics["baseline_rmse_bias"] - summary["test_rmse"])
        / run.data.metrics["baseline_rmse_bias"] * 100)
    # Registering the blend run again finds its version.
    again = registry.register(None, blended["config"], summary["blend_run_id"])
    assert again["already_registered"] and again["version"] == 3


def test_the_served_blend_reproduces_the_runs_test_rmse(blended):
    summary = blended["summary"]
    test, history = blended["test"].toPandas(), blended["history"].toPandas()
    pyfunc = mlflow.pyfunc.load_model("models:/prizeflow-als/3")
    assert isinstance(pyfunc.unwrap_python_model().model, BlendedModel)
    assert rmse(test["rating"], pyfunc.predict(with_history_lists(test, history, dates=False))) == pytest.approx(
        summary["test_rmse"], abs=1e-6)
    run = MlflowClient().get_run(summary["blend_run_id"])
    without = pyfunc.predict(test[["user_id", "movie_id"]])
    assert rmse(test["rating"], without) == pytest.approx(
        run.data.metrics["test_rmse_without_history"], abs=1e-6)


def test_the_gate_rescoring_and_predict_score_a_blended_champion(spark, blended):
    model, version = registry.load_model("prizeflow-als", "champion")
    assert version == 3 and isinstance(model, BlendedModel)
    test, history = blended["test"], blended["history"]
    assert blend_scoring.test_rmse(model, test, history, partitions.parallelism(spark)) == \
        pytest.approx(blended["summary"]["test_rmse"], abs=1e-9)
    # With their dates (one of them missing) and five requests asked twice: one row each.
    some = test.select("user_id", "movie_id", "rated_on").orderBy("user_id", "movie_id").limit(300)
    pairs = (some.withColumn("rated_on", F.when(F.col("movie_id") % 11 == 0, None)
                             .otherwise(F.col("rated_on")))
             .unionByName(some.limit(5)))
    got = (predicting.with_blended_predictions(model, pairs, history, buckets=4)
           .toPandas().sort_values(["user_id", "movie_id"]).reset_index(drop=True))
    assert list(got.columns) == ["user_id", "movie_id", "rated_on", "prediction"]
    assert len(got) == 305 and got["prediction"].notna().all()
    known = history.toPandas()
    served = mlflow.pyfunc.load_model("models:/prizeflow-als/3").predict(
        with_history_lists(got, known, dates=False))
    assert got["prediction"].to_numpy() == pytest.approx(np.asarray(served), abs=1e-6)


def test_top_n_of_a_blend_in_spark_is_the_numpy_lists_and_rates_as_the_blend(spark, blended):
    model, _ = registry.load_model("prizeflow-als", "champion")
    history = blended["history"]
    got, expected = spark_and_numpy_top_n(spark, model, history, 5)
    assert len(got) == 5 * got["user_id"].nunique() > 0
    assert (got[["user_id", "rank", "movie_id"]].to_numpy()
            == expected[["user_id", "rank", "movie_id"]].to_numpy()).all()
    assert got["predicted_rating"].to_numpy() == pytest.approx(
        expected["predicted_rating"].to_numpy(), abs=1e-9)
    # Each listed rating is the blend's own prediction of that pair; no rated movie is listed.
    everyone = history.toPandas()
    served = mlflow.pyfunc.load_model("models:/prizeflow-als/3").predict(
        with_history_lists(got, everyone, dates=False))
    assert np.asarray(served) == pytest.approx(got["predicted_rating"].to_numpy(), abs=1e-6)
    rated = set(zip(everyone["user_id"], everyone["movie_id"]))
    assert not any((u, m) in rated for u, m in zip(got["user_id"], got["movie_id"]))
    # Not a member's lists under another name: the blend ranks by itself.
    _, first = spark_and_numpy_top_n(spark, model, history, 5, model_of=model.members[0])
    assert not np.array_equal(first["movie_id"].to_numpy(), got["movie_id"].to_numpy())


def test_recommend_writes_the_blended_champions_lists(spark, blended):
    summary = recommending.recommend(spark, blended["config"], top=5)
    assert summary["model_version"] == 3
    assert summary["rows"] == 5 * summary["users"] and summary["users"] == 600


def test_a_blend_refuses_a_blend_a_missing_version_and_a_repeated_one(spark, blended):
    config = blended["config"]
    with pytest.raises(blending.BlendError, match="v3 is itself a blend"):
        blending.blend(spark, config, "1,3")
    with pytest.raises(blending.BlendError, match="no version 9 of registered model"):
        blending.blend(spark, config, "1,9")
    with pytest.raises(blending.BlendError, match="at least two distinct versions"):
        blending.blend(spark, config, "2,2")
    with pytest.raises(blending.BlendError, match="numbered from 1"):
        blending.blend(spark, config, "0,1")
    with pytest.raises(blending.BlendError, match="registered version numbers"):
        blending.blend(spark, config, "1;2")


def _handmade_version(client: MlflowClient, name: str, experiment_id: str, params: dict) -> int:
    """A finished train run with a gate record (made here, not by train) registered as a
    version of ``name``: what a blend reads before it loads anything."""
    run = client.create_run(experiment_id, tags={"prizeflow.command": "train"})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                          run.info.run_id,
                                          tags={"train_run_id": run.info.run_id})
    return int(version.version)


def test_a_blend_refuses_refit_members_and_members_of_other_test_sets(spark, blended):
    config = blended["config"].model_copy(deep=True)
    config.mlflow.registered_model = "handmade"
    client = MlflowClient()
    client.create_registered_model("handmade")
    experiment_id = client.get_experiment_by_name(config.mlflow.experiment).experiment_id
    record = {"gate.split": "sha256:a", "gate.lake": "sha256:l", "gate.lake_root": "/lake",
              "gate.ratings_table": "t", "gate.test_rmse": "0.9", "data_version": "1"}
    plain = _handmade_version(client, "handmade", experiment_id, {**record, "refit": "False"})
    refit = _handmade_version(client, "handmade", experiment_id, {**record, "refit": "True"})
    other = _handmade_version(client, "handmade", experiment_id,
                              {**record, "refit": "False", "gate.split": "sha256:b",
                               "data_version": "2"})
    with pytest.raises(blending.BlendError, match=f"v{refit} was refit on train"):
        blending.blend(spark, config, f"{plain},{refit}")
    with pytest.raises(blending.BlendError,
                       match=f"v{plain} and v{other} were tested on different test sets"):
        blending.blend(spark, config, f"{plain},{other}")
