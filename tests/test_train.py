"""`prizeflow train` end to end on a generated Netflix-layout corpus: probe split, baselines,
the grid as child runs, the model artifact, and a pinned Delta version reproducing a run."""

import json
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from prizeflow import ingestion, training
from prizeflow.config import load_config
from prizeflow.jobs.common import JobError

from conftest import copy_lake, fork_lake, head_commit, pyfunc_on_test, rmse, table, write

pytestmark = [pytest.mark.spark, pytest.mark.mlflow]

GRID = {"train.grid.kind": "[residual, plain]", "train.grid.rank": "[8]",
        "train.grid.reg_param": "[0.1]", "train.grid.max_iter": "[6]",
        "train.grid.bias_reg": "[5]", "train.parallelism": "2", "train.num_blocks": "2",
        # The time-aware baseline (on by default) is trained and checked in test_time_train.
        "train.time.enabled": "false",
        # Top-10 quality is measured in the `trained` run only, where it is checked.
        "train.ranking_users": "0"}


# Planted in the config (the session is already up, so Spark never sees it): it must not reach
# the run's config artifact, params or tags.
FAKE_SECRET = "FAKE-s3cr3t-in-train"


def _config(small_lake, tmp, **extra):
    config = copy_lake(small_lake, tmp)
    overrides = [f"{k}={v}" for k, v in {**GRID, **extra}.items()]
    merged = load_config(None, overrides)
    config = config.model_copy(update={section: getattr(merged, section)
                                       for section in ("data", "split", "train")})
    return config.override(f"spark.conf.spark.hadoop.fs.s3a.secret.key={FAKE_SECRET}")


def _pyfunc_on_test(spark, config, model_uri):
    """(test rows, the loaded pyfunc, its RMSE with each user's history, without one)."""
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    rows, with_history, without = pyfunc_on_test(spark, config, pyfunc,
                                                 config.train.refit_on_validation)
    return rows, pyfunc, rmse(rows["rating"], with_history), rmse(rows["rating"], without)


@pytest.fixture(scope="module")
def trained(spark, small_lake, tmp_path_factory, uses_mlflow):
    tmp = tmp_path_factory.mktemp("train")
    config = _config(small_lake, tmp, **{"train.ranking_users": "10000"})
    summary = training.train(spark, config).summary()
    return {"tmp": tmp, "config": config, "ingested": small_lake["ingest"], "summary": summary,
            "corpus": small_lake["corpus"]}


def test_summary_reports_model_baselines_and_lift(trained):
    summary = trained["summary"]
    assert summary["split_method"] == "probe"
    assert summary["split_counts"]["test"] == trained["ingested"]["probe"] > 0
    assert summary["grid_points"] == 2  # {residual, plain}
    # A generated corpus's probe is not the Prize's: Cinematch's published figure is no
    # baseline for it, and the summary says why.
    assert set(summary["baselines"]) == {"global_mean", "bias"}
    assert summary["baselines_left_out"] == {"cinematch": (
        f"the test set holds {summary['split_counts']['test']:,} ratings where the Netflix "
        "Prize's probe set holds 1,408,395")}
    for name, rmse in summary["baselines"].items():
        expected = (rmse - summary["test_rmse"]) / rmse * 100
        assert summary["lift_pct"][name] == pytest.approx(expected)
    # The generated corpus has planted factors: bias-aware ALS must beat both baselines.
    assert summary["best_params"]["kind"] == "residual"
    assert summary["test_rmse"] < summary["baselines"]["bias"] < summary["baselines"]["global_mean"]
    assert 0 < summary["test_mae"] < summary["test_rmse"]
    # Top-10 quality on every test user with a relevant rating (fewer than ranking_users here).
    ranks = summary["ranking"]
    assert ranks["model"]["users"] == ranks["popularity"]["users"] > 0
    for figures in ranks.values():
        assert 0 <= figures["precision_at_10"] <= 1 and 0 <= figures["ndcg_at_10"] <= 1
        assert 0 <= figures["recall_at_10"] <= 1
    # Both lists find relevant movies. (Popularity ranks better here: which movies a user
    # rates follows their popularity, and a model of rating values does not know it.)
    assert ranks["model"]["ndcg_at_10"] > 0 and ranks["popularity"]["ndcg_at_10"] > 0
    assert ranks["model"] != ranks["popularity"]
    json.dumps(summary)  # the CLI prints it


def test_mlflow_holds_children_metrics_plots_data_version_and_model(trained):
    summary, config = trained["summary"], trained["config"]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    client = MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.data.metrics["test_ndcg_at_10"] == summary["ranking"]["model"]["ndcg_at_10"]
    assert parent.data.metrics["popularity_precision_at_10"] == (
        summary["ranking"]["popularity"]["precision_at_10"])
    assert parent.data.metrics["ranking_users"] == summary["ranking"]["model"]["users"]
    assert parent.data.tags["baseline_left_out_cinematch"] == (
        summary["baselines_left_out"]["cinematch"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    assert len(children) == summary["grid_points"]
    assert sorted(c.data.params["kind"] for c in children) == ["plain", "residual"]
    assert all("validation_rmse" in c.data.metrics and "fit_seconds" in c.data.metrics
               for c in children)
    assert min(c.data.metrics["validation_rmse"] for c in children) == pytest.approx(
        summary["validation_rmse"])
    metrics = parent.data.metrics
    assert metrics["test_rmse"] == pytest.approx(summary["test_rmse"])
    assert metrics["lift_pct_bias"] == pytest.approx(summary["lift_pct"]["bias"])
    assert parent.data.params["best_rank"] == "8"
    assert parent.data.params["data_version"] == str(summary["data_version"])
    assert parent.data.tags["prizeflow.git_commit"] == head_commit()
    inputs = parent.inputs.dataset_inputs
    assert len(inputs) == 1
    source = json.loads(inputs[0].dataset.source)
    assert source["delta_table_version"] in (summary["data_version"], str(summary["data_version"]))
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    assert {"plots/grid_residual.png", "plots/grid_plain.png",
            "plots/model_vs_baselines.png"} <= artifacts
    config_text = mlflow.artifacts.load_text(f"runs:/{summary['run_id']}/config.yaml")
    logged = yaml.safe_load(config_text)
    assert logged["train"]["grid"] == {"kind": ["residual", "plain"], "rank": [8],
                                       "reg_param": [0.1], "max_iter": [6], "bias_reg": [5]}
    assert (logged["train"]["parallelism"], logged["train"]["num_blocks"]) == (2, 2)
    assert logged["lake"]["root"] == config.lake.root
    # The whole config the run used, the planted secret masked and nothing else changed.
    used = config.as_dict()
    used["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] = "***"
    assert logged == used
    assert "spark.hadoop.fs.s3a.secret.key: '***'" in config_text
    recorded = json.dumps([parent.data.params, parent.data.tags])
    assert FAKE_SECRET not in config_text + recorded

    model = mlflow.pyfunc.load_model(summary["model_uri"])
    pairs = pd.DataFrame({"user_id": np.array([1, 2, 10**9], dtype=np.int32),
                          "movie_id": np.array([1, 2, 3], dtype=np.int32)})
    predictions = np.asarray(model.predict(pairs))
    assert predictions.shape == (3,)
    assert np.all((predictions >= 1) & (predictions <= 5))


def test_spark_model_predicts_like_the_pyfunc(spark, trained):
    summary, config = trained["summary"], trained["config"]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(summary["model_uri"])
    factors = pyfunc.unwrap_python_model().model
    known = [(int(u), int(m)) for u, m in zip(factors.user_ids[:40],
                                               np.resize(factors.movie_ids, 40))]
    pairs = known + [(int(factors.user_ids[0]), 10**6), (10**8, int(factors.movie_ids[0])),
                     (10**8, 10**6)]
    frame = pd.DataFrame(pairs, columns=["user_id", "movie_id"])
    # The Spark form is the ALS part of the blend (a PipelineModel cannot join each user's
    # ratings for the neighbourhood term): the pyfunc's predictions without that term.
    assert factors.neighbourhood is not None
    expected = replace(factors, neighbourhood=None).predict(frame["user_id"], frame["movie_id"])
    pipeline = mlflow.spark.load_model(summary["spark_model_uri"],
                                       dfs_tmpdir=str(trained["tmp"] / "dfs"))
    scored = pipeline.transform(spark.createDataFrame(frame.astype("int32")))
    assert scored.columns == ["user_id", "movie_id", "prediction"]
    got = {(r.user_id, r.movie_id): r.prediction for r in scored.collect()}
    assert len(got) == len(pairs)
    assert np.max(np.abs(np.array([got[p] for p in pairs]) - expected)) < 1e-4


def test_blend_is_learned_on_validation_and_the_pyfunc_reproduces_test_rmse(spark, trained):
    summary, config = trained["summary"], trained["config"]
    weights = summary["blend_weights"]
    # intercept, baseline, factor term, neighbour term, implicit term
    assert len(weights) == 5 and all(np.isfinite(weights))
    assert summary["test_rmse_als"] < summary["baselines"]["bias"]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    parent = MlflowClient().get_run(summary["run_id"])
    assert parent.data.params["blend"] == "True"
    assert float(parent.data.params["blend_weight_neighbour_term"]) == pytest.approx(weights[3])
    assert float(parent.data.params["blend_weight_implicit_term"]) == pytest.approx(weights[4])
    assert parent.data.metrics["test_rmse_als"] == pytest.approx(summary["test_rmse_als"])
    assert "validation_rmse_blend" in parent.data.metrics
    # The Spark-free model, given each user's history as train had it, scores the test set to
    # the RMSE train reported for it; without a history, to test_rmse_without_history.
    rows, pyfunc, with_history, without = _pyfunc_on_test(spark, config, summary["model_uri"])
    assert with_history == pytest.approx(summary["test_rmse"], abs=1e-9)
    assert without == pytest.approx(summary["test_rmse_without_history"], abs=1e-9)
    assert summary["test_rmse"] < summary["test_rmse_without_history"]
    als_part = replace(pyfunc.unwrap_python_model().model, neighbourhood=None)
    als_only = als_part.predict(rows["user_id"], rows["movie_id"])
    assert rmse(rows["rating"], als_only) == pytest.approx(summary["test_rmse_als"], abs=1e-9)
    term = pyfunc.unwrap_python_model().model.implicit
    assert term is not None and term.weights.shape == term.item_factors.shape
    assert np.abs(term.weights).max() > 0 and np.abs(term.item_factors).max() > 0


def test_without_refit_the_blend_reuses_the_grid_fit_and_its_similarities(
        spark, small_lake, tmp_path, monkeypatch):
    # Halving on: the short fits must not be mistaken for the chosen model.
    config = _config(small_lake, tmp_path, **{
        "train.grid.kind": "[residual]", "train.grid.rank": "[4, 8]",
        "train.halving.enabled": "true", "train.halving.first_iter": "2",
        "train.halving.keep_fraction": "0.5", "train.refit_on_validation": "false"})
    fits, joins = [], []
    real_fit, real_similarities = training.fit_point, training.neighbours.similarities

    def counting_fit(point, *args, **kwargs):
        fits.append(point)
        return real_fit(point, *args, **kwargs)

    def counting_similarities(*args, **kwargs):
        joins.append(args)
        return real_similarities(*args, **kwargs)

    monkeypatch.setattr(training, "fit_point", counting_fit)
    monkeypatch.setattr(training.neighbours, "similarities", counting_similarities)
    summary = training.train(spark, config).summary()
    # Two short fits, one survivor to its full 6 iterations, and nothing fitted again.
    assert sorted(p.max_iter for p in fits) == [2, 2, 6]
    assert len(joins) == 1
    assert summary["split_counts"]["train"] > 0 and len(summary["blend_weights"]) == 5
    assert max(summary["test_rmse"], summary["test_rmse_als"]) < summary["baselines"]["bias"]
    _, _, with_history, _ = _pyfunc_on_test(spark, config, summary["model_uri"])
    assert with_history == pytest.approx(summary["test_rmse"], abs=1e-9)


def test_pinned_data_version_reproduces_split_and_metrics(spark, trained, tmp_path):
    import shutil

    config, first = fork_lake(trained["config"], tmp_path), trained["summary"]
    # New ratings arrive, and new probe pairs among the ratings the pinned version holds: both
    # tables move on to new versions. The corpus, copied elsewhere, is the same corpus: only
    # the new and the changed file are read.
    corpus = tmp_path / "corpus"
    shutil.copytree(trained["corpus"], corpus)
    write(corpus / "training_set" / "mv_0000999.txt",
          "999:\n" + "".join(f"{u},4,2005-06-01\n" for u in range(1, 301)))
    probed = table(spark, config, "probe").select("movie_id", "user_id")
    unprobed = (table(spark, config, "ratings").select("movie_id", "user_id")
                .join(probed, ["movie_id", "user_id"], "left_anti").orderBy("movie_id", "user_id")
                .limit(20).collect())
    with open(corpus / "probe.txt", "a", encoding="utf-8") as probe:
        probe.write("".join(f"{r.movie_id}:\n{r.user_id}\n" for r in unprobed))
    added = ingestion.ingest(spark, config, str(corpus), "netflix")
    assert added["files_ingested"] == 2
    latest = table(spark, config, "ratings").count()
    assert latest == trained["ingested"]["ratings"] + 300
    assert table(spark, config, "probe").count() == trained["ingested"]["probe"] + 20

    pinned = config.override(f"data.version={first['data_version']}")
    again = training.train(spark, pinned).summary()
    assert again["data_version"] == first["data_version"]
    assert again["split_counts"] == first["split_counts"]
    assert again["best_params"] == first["best_params"]
    assert again["test_rmse"] == pytest.approx(first["test_rmse"], abs=1e-6)
    assert again["baselines"] == pytest.approx(first["baselines"])
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    source = json.loads(MlflowClient().get_run(again["run_id"]).inputs.dataset_inputs[0]
                        .dataset.source)
    assert str(source["delta_table_version"]) == str(first["data_version"])

    missing = config.override("data.version=999")
    with pytest.raises(JobError, match=r"data.version 999 is not a complete ingest of .*ratings; "
                                       r"complete versions: \d"):
        training.train(spark, missing)


def test_the_train_run_reads_back_through_its_contract(trained):
    """What `train` wrote, read by the one reader the registry and the notebooks use
    (prizeflow.train_runs.TrainRun): every field equals the run's own summary."""
    from prizeflow import train_runs

    summary, config = trained["summary"], trained["config"]
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    client = MlflowClient()
    run = train_runs.get(client, summary["run_id"])
    assert run.test_rmse == pytest.approx(summary["test_rmse"])
    assert run.baselines == pytest.approx(summary["baselines"])
    assert run.lift_pct == pytest.approx(summary["lift_pct"])
    assert run.best_params == {k: str(v) for k, v in summary["best_params"].items()}
    assert run.data_version == summary["data_version"]
    assert run.probe_version is not None  # the probe split read the probe table
    # The generated corpus has qualifying pairs: N(u) held them, at this version.
    assert int(run.params["qualifying_version"]) >= 0
    assert run.refit is config.train.refit_on_validation
    assert run.git_commit == head_commit()
    assert run.pipeline_run is None
    assert run.model_uri == summary["model_uri"]
    assert run.config()["train"]["grid"]["rank"] == [8]
    points = run.points(client)
    assert sorted(p.point.kind for p in points) == ["plain", "residual"]
    assert points[0].validation_rmse == pytest.approx(summary["validation_rmse"])
    assert all(p.iterations == 6 and p.seconds > 0 and not p.pruned for p in points)
    child = client.search_runs([run.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{run.run_id}'")[0]
    with pytest.raises(train_runs.TrainRunError,
                       match="is not a `prizeflow train` or `prizeflow blend` run"):
        train_runs.get(client, child.info.run_id)  # a grid point's run is not a train run
