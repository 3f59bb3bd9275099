"""``prizeflow train``: the Delta ``ratings`` table -> the best ALS model of a grid, in MLflow.

    prizeflow train [--conf conf/local.yaml] [--set data.version=N] [--set train.grid.rank=[8,16]]
    spark-submit --packages io.delta:... jobs/train.py --conf conf/<env>.yaml

Flow: read ``ratings`` at a pinned Delta version -> deterministic split (Netflix probe, hash or
per-user chronological) -> baselines (global mean, mu + b_u + b_i) -> ALS grid over driver
threads -> best point by validation RMSE -> blended with an item-item neighbourhood on the
baseline residuals (weights learned on validation) -> refitted on train + validation -> test
RMSE, MAE and lift against each baseline. One MLflow run holds it all, with a child run per grid point and the
Spark-free model as its artifact. Progress goes to stderr; the last stdout line is the summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import als, baselines, blend, grid, lake, metrics, neighbours, splits
from prizeflow.config import describe
from prizeflow.jobs.common import JobError, make_parser, run_job

logger = logging.getLogger(__name__)

GRID_POOL_PREFIX = "prizeflow-grid-"


def build_parser() -> argparse.ArgumentParser:
    return make_parser("train", "Train the ALS grid on the ratings table and track it in MLflow.")


@dataclass
class TrainingData:
    ratings: DataFrame  # user_id, movie_id, rating, rated_on
    ratings_path: str
    version: int
    low: float
    high: float
    probe: DataFrame | None
    probe_version: int | None


def load_training_data(spark: SparkSession, config: dict[str, Any]) -> TrainingData:
    """The ratings at the pinned (or latest) Delta version, their scale, and the probe pairs."""
    root = config["lake"]["root"]
    path = lake.table_path(root, "ratings")
    latest = lake.version(spark, path)
    if latest is None:
        raise JobError(f"no ratings table at {path}: run `prizeflow ingest` first")
    wanted = config["data"]["version"]
    if wanted is not None and not 0 <= wanted <= latest:
        raise JobError(f"data.version {wanted} does not exist: ratings versions are 0..{latest}")
    version = latest if wanted is None else wanted
    ratings = (spark.read.format("delta").option("versionAsOf", version).load(path)
               .select("user_id", "movie_id", "rating", "rated_on"))
    props = lake.properties(spark, path)
    low = float(props.get("prizeflow.rating_low", 1.0))
    high = float(props.get("prizeflow.rating_high", 5.0))
    probe_path = lake.table_path(root, "probe")
    probe_version = lake.version(spark, probe_path)
    probe = None
    if probe_version is not None:
        probe = spark.read.format("delta").load(probe_path).select("user_id", "movie_id")
    return TrainingData(ratings, path, version, low, high, probe, probe_version)


def choose_split_method(config: dict[str, Any], data: TrainingData) -> str:
    method = config["split"]["method"]
    has_probe = data.probe is not None and data.probe.limit(1).count() > 0
    if method == "auto":
        return "probe" if has_probe else "hash"
    if method == "probe" and not has_probe:
        raise JobError("split.method is 'probe' but there is no non-empty probe table")
    return method


def split_ratings(data: TrainingData, config: dict[str, Any], method: str) -> DataFrame:
    conf = config["split"]
    if method == "probe":
        return splits.probe_split(data.ratings, data.probe, conf["validation_fraction"],
                                  conf["seed"])
    if method == "chronological":
        return splits.chronological_split(data.ratings, conf["test_fraction"],
                                          conf["validation_fraction"])
    return splits.hash_split(data.ratings, conf["test_fraction"], conf["validation_fraction"],
                             conf["seed"], conf["folds"], conf["fold"])


def test_pairs(spark: SparkSession, config: dict[str, Any]) -> tuple[DataFrame, int, str]:
    """The test ratings a run with this config (data version and split) was scored on."""
    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = split_ratings(data, config, method)
    return (splits.part(split, splits.TEST).select("user_id", "movie_id", "rating"),
            data.version, method)


def _persist(df: DataFrame) -> DataFrame:
    return df.persist(StorageLevel.MEMORY_AND_DISK)


@dataclass
class FitData:
    """One training set with its mean and, per bias regularisation, biases and residuals."""
    ratings: DataFrame
    mean: float
    biases: dict[float, baselines.Biases]
    residuals: dict[float, DataFrame]

    def release(self) -> None:
        for frame in [self.ratings, *self.residuals.values()]:
            frame.unpersist()
        for b in self.biases.values():
            b.users.unpersist()
            b.movies.unpersist()


def prepare(ratings: DataFrame, bias_regs: list[float], passes: int) -> FitData:
    ratings = _persist(ratings.select("user_id", "movie_id", "rating"))
    mean = baselines.global_mean(ratings)
    biases: dict[float, baselines.Biases] = {}
    residuals: dict[float, DataFrame] = {}
    for reg in bias_regs:
        fitted = baselines.fit_biases(ratings, reg, passes, mean)
        fitted.users = _persist(fitted.users)
        fitted.movies = _persist(fitted.movies)
        biases[reg] = fitted
        residuals[reg] = _persist(als.residuals(ratings, fitted))
        residuals[reg].count()
    return FitData(ratings, mean, biases, residuals)


def fit_point(point: als.GridPoint, fit_data: FitData, settings: als.AlsSettings,
              low: float, high: float) -> als.FittedModel:
    if point.kind == als.RESIDUAL:
        return als.fit(point, fit_data.residuals[point.bias_reg], settings, fit_data.mean,
                       fit_data.biases[point.bias_reg], low, high)
    return als.fit(point, fit_data.ratings, settings, fit_data.mean, None, low, high)


def baseline_errors(scored_pairs: DataFrame, mean: float, biases: baselines.Biases,
                    low: float, high: float) -> tuple[metrics.Errors, metrics.Errors]:
    """(global mean, bias model) errors on a held-out set."""
    with_mean = scored_pairs.withColumn("prediction", F.lit(mean))
    with_bias = (baselines.with_baseline(scored_pairs, biases, "raw")
                 .withColumn("prediction", baselines.clip(F.col("raw"), low, high)))
    return metrics.errors(with_mean), metrics.errors(with_bias)


@dataclass
class Blended:
    """The chosen ALS point blended with the item-item neighbourhood."""
    weights: list[float]
    validation_rmse: float
    test_errors: metrics.Errors
    neighbourhood: Any  # prizeflow.factors.Neighbourhood of the final (refitted) parts


def neighbour_parts(model: als.FittedModel, residuals: DataFrame, pairs: DataFrame,
                    conf: dict[str, Any], similar: DataFrame | None = None
                    ) -> tuple[DataFrame, DataFrame]:
    """(pairs with baseline, factor_term and neighbour_term, the persisted neighbour table);
    ``similar``: a neighbour table already computed from these residuals."""
    if similar is None:
        similar = _persist(neighbours.similarities(residuals, conf["shrink"],
                                                   conf["max_user_ratings"], conf["keep"]))
    parts = neighbours.with_term(als.with_parts(model, pairs), residuals, similar, conf["k"],
                                 conf["damping"])
    return _persist(parts), similar


def fit_blend(on_train: als.FittedModel, fit_data: FitData, final_data: FitData,
              final_model: als.FittedModel, validation: DataFrame, test: DataFrame,
              conf: dict[str, Any], low: float, high: float) -> Blended:
    """Weights learned on validation from parts fitted on train (``on_train``: the chosen point
    fitted on the training part); the same weights applied to the parts refitted on the final
    training data (``final_model``) and scored on test."""
    point = on_train.point
    residuals = fit_data.residuals[point.bias_reg]
    val_parts, val_similar = neighbour_parts(on_train, residuals, validation, conf)
    weights = blend.fit_weights(val_parts)
    validation_rmse = metrics.errors(
        val_parts.withColumn("prediction", blend.prediction(weights, low, high))).rmse
    logger.info("blend weights (intercept, baseline, factor, neighbour) %s: validation RMSE %.5f",
                ", ".join(f"{w:.4f}" for w in weights), validation_rmse)
    final_residuals = final_data.residuals[point.bias_reg]
    # Without a refit the final residuals are the training ones: reuse their self-join.
    test_parts, similar = neighbour_parts(final_model, final_residuals, test, conf,
                                          val_similar if final_data is fit_data else None)
    test_errors = metrics.errors(
        test_parts.withColumn("prediction", blend.prediction(weights, low, high)))
    exported = neighbours.export(final_residuals, similar, conf["k"], conf["damping"], weights)
    for frame in (val_parts, val_similar, test_parts, similar):  # unpersisting twice is a no-op
        frame.unpersist()
    return Blended(weights, validation_rmse, test_errors, exported)


def run(spark: SparkSession, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from prizeflow import tracking

    data = load_training_data(spark, config)
    method = choose_split_method(config, data)
    split = _persist(split_ratings(data, config, method))
    counts = {r[0]: r[1] for r in split.groupBy(splits.SPLIT).count().collect()}
    logger.info("ratings version %d, split %s: %s", data.version, method, counts)
    for name in (splits.TRAIN, splits.VALIDATION, splits.TEST):
        if not counts.get(name):
            raise JobError(f"the {method} split left no {name} ratings ({counts}); "
                           "check the split fractions and the data")
    train_conf = config["train"]
    checkpoint_dir = train_conf["checkpoint_dir"] or lake.table_path(config["lake"]["root"],
                                                                     "_checkpoints")
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    settings = als.AlsSettings(train_conf["seed"], train_conf["num_blocks"],
                               train_conf["checkpoint_interval"])
    points = grid.expand(train_conf["grid"])
    bias_regs = sorted({float(r) for r in train_conf["grid"]["bias_reg"]})

    experiment_id = tracking.configure(config)
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as parent:
        run_id = parent.info.run_id
        with warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold missing values: ids never are.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            # The version is given as text: MLflow treats a falsy 0 as "not given" and would
            # record whatever version is latest at logging time.
            dataset = mlflow.data.from_spark(data.ratings, path=data.ratings_path,
                                             version=str(data.version), name="ratings")
            mlflow.log_input(dataset, context="training")
        mlflow.set_tags({"prizeflow.command": "train", "prizeflow.git_commit": tracking.git_commit(),
                         "prizeflow.data_path": data.ratings_path,
                         "prizeflow.split": tracking.split_signature(config, data.ratings_path,
                                                                    data.version, method)})
        mlflow.log_params({"data_version": data.version, "split_method": method,
                           "probe_version": data.probe_version, "grid_points": len(points),
                           "parallelism": train_conf["parallelism"],
                           "halving": train_conf["halving"]["enabled"],
                           **{f"split_{k}": v for k, v in config["split"].items()}})
        mlflow.log_metrics({f"{name}_ratings": float(counts[name]) for name in counts})
        mlflow.log_text(describe(config), "config.yaml")

        train = splits.part(split, splits.TRAIN)
        validation = _persist(splits.part(split, splits.VALIDATION)
                              .select("user_id", "movie_id", "rating"))
        fit_data = prepare(train, bias_regs, train_conf["bias_passes"])

        # Tune the bias baseline's regularisation on validation like the model's, so the
        # baseline the lift is measured against is as good as it can be.
        bias_validation = {reg: baseline_errors(validation, fit_data.mean, b, data.low,
                                                data.high)[1].rmse
                           for reg, b in fit_data.biases.items()}
        baseline_reg = min(bias_validation, key=lambda r: (bias_validation[r], r))

        # The blend (and a run without refit) needs the chosen point fitted on train: keep the
        # best model seen so far (one, not all: at scale each holds its factor tables) instead
        # of fitting it again.
        best_seen: dict[str, Any] = {"rmse": float("inf"), "model": None}
        best_lock = threading.Lock()
        grid_points = set(points)

        def evaluate(point: als.GridPoint, slot: int) -> tuple[float, float]:
            spark.sparkContext.setLocalProperty("spark.scheduler.pool", f"{GRID_POOL_PREFIX}{slot}")
            started = time.monotonic()
            model = fit_point(point, fit_data, settings, data.low, data.high)
            rmse = metrics.errors(als.predict(model, validation)).rmse
            with best_lock:
                # A halving round's short fit is never the chosen model: do not hold it.
                if point in grid_points and rmse < best_seen["rmse"]:
                    best_seen.update(rmse=rmse, model=model)
            return rmse, time.monotonic() - started

        done = 0

        def on_result(result: grid.PointResult) -> None:
            nonlocal done
            done += 1
            tracking.log_point(client, experiment_id, run_id, result, done)
            state = " (pruned)" if result.pruned else ""
            logger.info("grid %d/%d %s: validation RMSE %.5f, %.1f s%s", done, len(points),
                        result.point.label(), result.validation_rmse, result.seconds, state)

        grid_started = time.monotonic()
        results = grid.run(points, evaluate, train_conf["parallelism"], on_result,
                           train_conf["halving"])
        grid_seconds = time.monotonic() - grid_started
        chosen = grid.best(results)
        logger.info("best point: %s (validation RMSE %.5f)", chosen.point.label(),
                    chosen.validation_rmse)

        refit_parts = ([splits.TRAIN, splits.VALIDATION] if train_conf["refit_on_validation"]
                       else [splits.TRAIN])
        final_regs = sorted({baseline_reg} | ({chosen.point.bias_reg}
                                             if chosen.point.bias_reg is not None else set()))
        # The chosen point fitted on the training part, unless the grid broke a tie differently.
        on_train = best_seen["model"]
        if on_train is not None and on_train.point != chosen.point:
            on_train = None
        if train_conf["refit_on_validation"]:
            final_data = prepare(splits.part(split, *refit_parts), final_regs,
                                 train_conf["bias_passes"])
            model = fit_point(chosen.point, final_data, settings, data.low, data.high)
        else:
            final_data = fit_data
            if on_train is None:
                on_train = fit_point(chosen.point, fit_data, settings, data.low, data.high)
            model = on_train
        test = _persist(splits.part(split, splits.TEST).select("user_id", "movie_id", "rating"))
        als_test_errors = metrics.errors(als.predict(model, test))
        test_errors = als_test_errors
        neighbour_conf = train_conf["neighbours"]
        blended = None
        if neighbour_conf["enabled"] and chosen.point.kind == als.RESIDUAL:
            if on_train is None:
                on_train = fit_point(chosen.point, fit_data, settings, data.low, data.high)
            blended = fit_blend(on_train, fit_data, final_data, model, validation, test,
                                neighbour_conf, data.low, data.high)
            test_errors = blended.test_errors
        elif neighbour_conf["enabled"]:
            # Worth a warning only when residual points lost; a plain-only grid asked for this.
            level = logging.WARNING if als.RESIDUAL in train_conf["grid"]["kind"] else logging.INFO
            logger.log(level, "the best point is plain ALS, which has no residuals to blend a "
                       "neighbourhood with: the model is ALS alone")
        mean_errors, bias_errors = baseline_errors(test, final_data.mean,
                                                   final_data.biases[baseline_reg],
                                                   data.low, data.high)
        baseline_rmse = {"global_mean": mean_errors.rmse, "bias": bias_errors.rmse}
        if method == "probe":
            baseline_rmse["cinematch"] = metrics.CINEMATCH_RMSE["probe"]
        lift = {name: metrics.lift_pct(value, test_errors.rmse)
                for name, value in baseline_rmse.items()}

        blend_params = {}
        blend_metrics = {}
        if blended is not None:
            blend_params = {**{f"neighbours_{k}": v for k, v in neighbour_conf.items()},
                            **{f"blend_weight_{name}": w for name, w in
                               zip(("intercept",) + blend.FEATURES, blended.weights)}}
            blend_metrics = {"validation_rmse_blend": blended.validation_rmse}
        mlflow.log_params({**{f"best_{k}": v for k, v in chosen.point.params().items()},
                           "baseline_bias_reg": baseline_reg, "refit_parts": ",".join(refit_parts),
                           "blend": blended is not None, **blend_params})
        mlflow.log_metrics({"validation_rmse": chosen.validation_rmse, **blend_metrics,
                            "test_rmse": test_errors.rmse, "test_mae": test_errors.mae,
                            "test_rmse_als": als_test_errors.rmse,
                            "test_ratings": float(test_errors.count),
                            "grid_seconds": grid_seconds,
                            **{f"baseline_rmse_{k}": v for k, v in baseline_rmse.items()},
                            **{f"lift_pct_{k}": v for k, v in lift.items()}})
        for kind in sorted({r.point.kind for r in results}):
            mlflow.log_figure(tracking.grid_heatmap(results, kind), f"plots/grid_{kind}.png")
        mlflow.log_figure(tracking.model_vs_baselines(test_errors.rmse, baseline_rmse),
                          "plots/model_vs_baselines.png")
        factor_model = als.export_factors(model)
        factor_model.neighbourhood = blended.neighbourhood if blended is not None else None
        model_info = tracking.log_factor_model(factor_model)
        mlflow.set_tag("prizeflow.model_uri", model_info.model_uri)
        spark_model_uri = None
        if train_conf["log_spark_model"]:
            # A PipelineModel cannot join the user's ratings for the neighbourhood term: the
            # Spark form holds the ALS part (baseline + p.q), scored as test_rmse_als.
            mlflow.set_tag("prizeflow.spark_model_terms", "baseline + ALS factors")
            from prizeflow import sparkmodel

            dfs_tmpdir = config["mlflow"]["dfs_tmpdir"] or lake.table_path(
                config["lake"]["root"], "_tmp/mlflow")
            spark_model_uri = tracking.log_spark_model(sparkmodel.build(spark, factor_model),
                                                       dfs_tmpdir).model_uri
            mlflow.set_tag("prizeflow.spark_model_uri", spark_model_uri)

    for frame in (split, validation, test):
        frame.unpersist()
    fit_data.release()
    if final_data is not fit_data:
        final_data.release()
    return {"run_id": run_id, "data_version": data.version, "split_method": method,
            "split_counts": counts, "grid_points": len(points),
            "best_params": chosen.point.params(), "validation_rmse": chosen.validation_rmse,
            "test_rmse": test_errors.rmse, "test_mae": test_errors.mae,
            "test_rmse_als": als_test_errors.rmse,
            "blend_weights": blended.weights if blended is not None else None,
            "baselines": baseline_rmse, "lift_pct": lift, "model_uri": model_info.model_uri,
            "spark_model_uri": spark_model_uri}


def main(argv: list[str] | None = None) -> int:
    return run_job("train", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
