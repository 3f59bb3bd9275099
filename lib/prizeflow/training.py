"""The training pipeline: ratings -> split -> baselines -> ALS grid -> neighbourhood blend ->
test scores -> one MLflow run holding the model.

    result = training.train(spark, config)     # `prizeflow train`, notebooks and benchmarks
    result.summary()                            # the JSON summary `prizeflow train` prints

Stages (each timed in ``result.stages``, with its start time for the scale benchmark):

1. ``split``: ``ratings`` at the pinned Delta version, split deterministically (prizeflow.data);
2. ``baselines``: the global mean and mu + b_u + b_i per grid ``bias_reg`` (with ``train.time``
   the time-aware baseline of prizeflow.time_effects, its regularisation chosen on validation);
   residuals cached;
3. ``grid <point>``: each ALS point (residual or plain) on driver threads and FAIR pools, a child
   run each, scored on validation;
4. ``neighbourhood``: movie similarities of the training residuals (prizeflow.neighbours);
5. ``implicit feedback`` and ``validation scoring``: the chosen point's parts on validation (and
   on test when there is no refit), with each user's history (the training ratings and the
   lake's ``qualifying`` pairs without a rating: prizeflow.data.with_unrated) -> blend weights
   (prizeflow.blend);
6. ``refit`` and ``refit neighbourhood``: the chosen point on train + validation;
7. ``test scoring``: the final model's parts on test, scored by the model's own rule; the
   Cinematch lift only when the test set is the Prize's probe (prizeflow.prize_probe);
8. ``model logging``: the Spark-free pyfunc (and the Spark ML form) into the run;
9. ``ranking quality``: precision@10, recall@10 and NDCG@10 of the final model's top-10 lists
   and of popularity's, on sampled test users (prizeflow.ranking), logged to the same run.

Nothing proportional to the number of ratings comes to the driver: it receives the model (users
x rank + movies x neighbours), aggregates and counts. Every cached frame is released when the
run ends, failed or not. ALS blocks follow the session's parallelism unless ``train.num_blocks``
is set.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import (als, baselines, blend, data, gate, grid, implicit, lake, metrics,
                       model_integrity, neighbours, partitions, progress, ranking, scoring,
                       sparkmodel, splits, time_effects, tracking, train_runs)
from prizeflow.columns import DAY, MOVIE_ID, PREDICTION, RATED_ON, RATING, TAG, USER_ID
from prizeflow.config import Config, describe
from prizeflow.errors import JobError
from prizeflow.factors import FactorModel, Neighbourhood
from prizeflow.prize_probe import why_not_the_prize_probe
from prizeflow.rule import Rule
from prizeflow.scoring import TEST_TAG, VALIDATION_TAG, predictions
from prizeflow.secrets import redact_text
from prizeflow.sessions import is_connect
from prizeflow.spark import GRID_POOL_PREFIX

logger = logging.getLogger(__name__)

@dataclass
class StageTime:
    name: str
    started: float  # unix seconds
    seconds: float


@dataclass
class Stages:
    """Wall time of each stage, logged as it ends."""
    done: list[StageTime] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def __call__(self, name: str):
        logger.info("%s ...", name)
        started, clock = time.time(), time.monotonic()
        with progress.step(name):
            yield
        self.add(name, started, time.monotonic() - clock)
        logger.info("%s: %.1f s", name, time.monotonic() - clock)

    def add(self, name: str, started: float, seconds: float) -> None:
        with self._lock:
            self.done.append(StageTime(name, started, seconds))

    def as_list(self) -> list[dict[str, Any]]:
        return [{"stage": s.name, "started": round(s.started, 3), "seconds": round(s.seconds, 3)}
                for s in self.done]


class Cache:
    """Frames persisted for the run; :meth:`release` unpersists them all."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def __call__(self, frame: DataFrame) -> DataFrame:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.frames.append(frame)
        return frame

    def release(self) -> None:
        for frame in self.frames:
            frame.unpersist()
        self.frames.clear()


Baseline = baselines.Biases | time_effects.TimeBiases


@dataclass(frozen=True)
class TimeRegs:
    """The time-aware baseline's settings for one fit: bins and the two regularisations."""
    bins: int
    reg_bin: float
    reg_alpha: float

    def params(self) -> dict[str, Any]:
        return {"time_bins": self.bins, "time_reg_bin": self.reg_bin,
                "time_reg_alpha": self.reg_alpha}


@dataclass
class FitData:
    """One training set with its mean and, per bias regularisation, biases and residuals."""
    ratings: DataFrame  # user_id, movie_id, rating (and day with time effects)
    rows: int
    mean: float
    biases: dict[float, Baseline]
    residuals: dict[float, DataFrame]
    # (user_id, movie_id, rated_on) rated without a known rating: N(u) only (data.unrated_pairs)
    unrated: DataFrame | None = None

    def history(self) -> DataFrame:
        """The ratings with the unrated pairs (rating null): what scoring reads as each
        user's history."""
        return data.with_unrated(self.ratings, self.unrated)

    def release(self) -> None:
        for frame in self.residuals.values():
            frame.unpersist()


def fit_baseline(ratings: DataFrame, reg: float, passes: int, mean: float,
                 time_regs: TimeRegs | None) -> Baseline:
    """mu + b_u + b_i, or with ``time_regs`` the time-aware baseline (ratings with ``day``)."""
    if time_regs is None:
        return baselines.fit_biases(ratings, reg, passes, mean)
    return time_effects.fit_time_biases(ratings, time_regs.bins, reg, time_regs.reg_bin,
                                        time_regs.reg_alpha, passes, mean)


def prepare(ratings: DataFrame, bias_regs: list[float], passes: int, cache: Cache,
            time_regs: TimeRegs | None = None) -> FitData:
    """Biases per regularisation and the residuals, cached. The residual frames keep the
    rating, so once they are cached the ratings' own cache is dropped: at most one copy of the
    training data (plus one per extra ``bias_reg``) stays in memory."""
    columns = [USER_ID, MOVIE_ID, RATING] + ([DAY] if time_regs is not None else [])
    ratings = cache(ratings.select(*columns))
    stats = ratings.agg(F.avg(RATING), F.count(F.lit(1))).first()
    if not stats[1]:
        raise ValueError("cannot fit a baseline on an empty training set")
    mean, rows = float(stats[0]), int(stats[1])
    biases: dict[float, Baseline] = {}
    residuals: dict[float, DataFrame] = {}
    for reg in bias_regs:
        fitted = fit_baseline(ratings, reg, passes, mean, time_regs)
        biases[reg] = fitted
        residuals[reg] = cache(baselines.residuals(ratings, fitted))
        residuals[reg].count()
    ratings.unpersist()
    kept = residuals[bias_regs[0]].select(*columns)
    return FitData(kept, rows, mean, biases, residuals)


def fit_point(point: grid.GridPoint, fit_data: FitData, settings: als.AlsSettings,
              low: float, high: float) -> als.FittedModel:
    if point.kind == grid.RESIDUAL:
        return als.fit(point, fit_data.residuals[point.bias_reg], settings, fit_data.mean,
                       fit_data.biases[point.bias_reg], low, high)
    return als.fit(point, fit_data.ratings, settings, fit_data.mean, None, low, high)


def baseline_errors(scored_pairs: DataFrame, mean: float, biases: Baseline,
                    low: float, high: float) -> tuple[metrics.Errors, metrics.Errors]:
    """(global mean, bias model) errors on a held-out set."""
    with_mean = scored_pairs.withColumn(PREDICTION, F.lit(mean))
    with_bias = (biases.with_baseline(scored_pairs, "raw")
                 .withColumn(PREDICTION, baselines.clip(F.col("raw"), low, high)))
    return metrics.errors(with_mean), metrics.errors(with_bias)


@dataclass
class TrainResult:
    run_id: str
    data_version: int
    split_method: str
    split_counts: dict[str, int]
    grid_points: int
    best_params: dict[str, Any]
    validation_rmse: float
    test: dict[str, metrics.Errors]  # prediction, prediction_without_history, prediction_als
    blend_weights: list[float] | None
    baselines: dict[str, float]
    lift_pct: dict[str, float]
    model_uri: str
    spark_model_uri: str | None
    model_bytes: int
    stages: Stages
    # Baselines not compared with, and why (Cinematch's figure is only for the Prize's probe).
    baselines_left_out: dict[str, str] = field(default_factory=dict)
    # precision@10, recall@10, NDCG@10 of the model and of popularity (prizeflow.ranking).
    ranking: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "data_version": self.data_version,
                "split_method": self.split_method, "split_counts": self.split_counts,
                "grid_points": self.grid_points, "best_params": self.best_params,
                "validation_rmse": self.validation_rmse,
                "test_rmse": self.test[PREDICTION].rmse, "test_mae": self.test[PREDICTION].mae,
                "test_rmse_without_history": self.test["prediction_without_history"].rmse,
                "test_rmse_als": self.test["prediction_als"].rmse,
                "blend_weights": self.blend_weights, "baselines": self.baselines,
                "lift_pct": self.lift_pct, "baselines_left_out": self.baselines_left_out,
                "ranking": self.ranking,
                "model_uri": self.model_uri,
                "spark_model_uri": self.spark_model_uri, "model_bytes": self.model_bytes,
                "stages": self.stages.as_list()}


class Pipeline:
    """One training run; :func:`train` is the entry point."""

    def __init__(self, spark: SparkSession, config: Config) -> None:
        self.spark = spark
        self.config = config
        self.conf = config.train
        self.cache = Cache()
        self.stages = Stages()
        self.parallelism = partitions.parallelism(spark)
        self.settings = als.AlsSettings(self.conf.seed, self.conf.num_blocks or 1,
                                        self.conf.checkpoint_interval)
        # Each rating's day travels with it only when the time-aware baseline reads it.
        self.columns = (USER_ID, MOVIE_ID, RATING) + ((DAY,) if self.conf.time.enabled else ())

    def size_blocks(self, rows: int) -> None:
        """ALS blocks from config, else from the cores and the training ratings."""
        blocks = self.conf.num_blocks or als.default_blocks(rows, self.parallelism)
        self.settings = replace(self.settings, num_blocks=blocks)
        logger.info("ALS: %d user and item blocks (%d cores, %d training ratings)", blocks,
                    self.parallelism, rows)

    # --- stages -----------------------------------------------------------------------------
    def split(self):
        with self.stages("split"):
            source = data.load_training_data(self.spark, self.config)
            method = data.choose_split_method(self.config, source)
            split = data.split_ratings(source, self.config, method)
            if self.conf.time.enabled:
                split = split.withColumn(DAY, time_effects.day_number(F.col(RATED_ON)))
            split = self.cache(split.select(*self.columns, splits.SPLIT))
            counts = {r[0]: r[1] for r in split.groupBy(splits.SPLIT).count().collect()}
        logger.info("ratings version %d, split %s: %s", source.version, method, counts)
        for name in (splits.TRAIN, splits.VALIDATION, splits.TEST):
            if not counts.get(name):
                raise JobError(f"the {method} split left no {name} ratings ({counts}); "
                               "check the split fractions and the data")
        return source, method, split, counts

    def part(self, split: DataFrame, *names: str) -> DataFrame:
        return splits.part(split, *names).select(*self.columns)

    def run_grid(self, points, fit_data: FitData, validation: DataFrame, low: float,
                 high: float, on_result):
        """Every grid point scored on validation; returns (results, the best full fit seen)."""
        connect = is_connect(self.spark)
        parallelism = self.conf.parallelism
        if connect and parallelism > 1:
            # pyspark's ML client finds its session per thread, and frees server-side models
            # with RPCs that can hang against another thread's: one fit at a time (each fit
            # still uses every core of the server's cluster).
            logger.info("Spark Connect: grid points are fitted one at a time "
                        "(train.parallelism %d applies to classic Spark only)", parallelism)
            parallelism = 1
        best_seen: dict[str, Any] = {"rmse": float("inf"), "model": None}
        lock = threading.Lock()
        full_points = set(points)

        def evaluate(point: grid.GridPoint, slot: int) -> tuple[float, float]:
            if not connect:  # no local properties over Connect (and no concurrent fits)
                self.spark.sparkContext.setLocalProperty("spark.scheduler.pool",
                                                         f"{GRID_POOL_PREFIX}{slot}")
            started, clock = time.time(), time.monotonic()
            model = fit_point(point, fit_data, self.settings, low, high)
            rmse = metrics.errors(als.predict(model, validation)).rmse
            seconds = time.monotonic() - clock
            self.stages.add(f"grid {point.label()}", started, seconds)
            with lock:
                # A halving round's short fit is never the chosen model: do not hold it.
                if point in full_points and rmse < best_seen["rmse"]:
                    best_seen.update(rmse=rmse, model=model)
            return rmse, seconds

        results = grid.run(points, evaluate, parallelism, on_result, self.conf.halving)
        return results, best_seen["model"]

    def neighbour_arrays(self, residuals: DataFrame, rows: int, movie_ids):
        conf = self.conf.neighbours
        lists = neighbours.similarities(residuals, conf.shrink, conf.max_user_ratings,
                                        conf.keep, self.parallelism, rows)
        # At most movies x keep entries: the model's own size, not the ratings'.
        return neighbours.collect_arrays(lists, movie_ids, conf.keep)

    def with_neighbourhood(self, model: FactorModel, arrays, implicit_term=None,
                           weights=None, without=(0.0, 1.0, 1.0)) -> FactorModel:
        """``model`` with the neighbourhood (and implicit term); ``weights`` follow
        :func:`prizeflow.blend.features` of the model's parts (None: every part at 1, as
        validation scoring computes them)."""
        import numpy as np

        conf = self.conf.neighbours
        parts = blend.features(implicit_term is not None,
                               model.time is not None and model.time.day_reg is not None)
        if weights is None:
            weights = (0.0,) + (1.0,) * len(parts)
        if len(weights) != len(parts) + 1:
            raise ValueError(f"{len(weights)} blend weights for the parts {parts}")
        return replace(model, implicit=implicit_term, neighbourhood=Neighbourhood(
            conf.k, float(conf.damping), np.asarray(weights, dtype=np.float64),
            np.asarray(without, dtype=np.float64), *arrays))

    def with_day_bias(self, model: FactorModel) -> FactorModel:
        """A model with time effects scores each dated request with the user's bias of that day
        (``train.time.day_reg``)."""
        if model.time is None:
            return model
        return replace(model, time=replace(model.time, day_reg=self.conf.time.day_reg))

    def implicit_term(self, data: FitData, bias_reg: float, movie_ids):
        """The implicit-feedback part (None when ``train.implicit.enabled`` is false)."""
        conf = self.conf.implicit
        if not conf.enabled:
            return None
        return implicit.fit(data.ratings, data.residuals[bias_reg], movie_ids, conf,
                            self.conf.seed, self.settings.num_blocks, self.parallelism,
                            data.unrated)

    def parts(self, model: FactorModel, fitted: als.FittedModel, wanted: DataFrame,
              history: FitData) -> DataFrame:
        buckets = scoring.bucket_count(history.rows, self.parallelism)
        return self.cache(scoring.score(model, als.user_side(fitted), wanted,
                                        history.history(), buckets))

    def test_errors(self, model: FactorModel, parts: DataFrame) -> dict[str, metrics.Errors]:
        test = parts.where(F.col(TAG) == TEST_TAG)
        return {name: metrics.errors(test.withColumn(PREDICTION, column))
                for name, column in predictions(model).items()}


@dataclass
class HeldOut:
    """The split's parts and the baselines fitted on training (stage ``baselines``)."""
    validation: DataFrame
    test: DataFrame
    fit_data: FitData
    baseline_reg: float  # the bias baseline's regularisation, tuned on validation
    low: float
    high: float
    time_regs: TimeRegs | None = None  # the time-aware baseline's, tuned on validation


@dataclass
class Search:
    """The grid's outcome: every point's result and the chosen point fitted on training."""
    results: list
    chosen: grid.PointResult
    on_train: als.FittedModel
    seconds: float


@dataclass
class FinalModel:
    model: FactorModel
    fit: als.FittedModel
    data: FitData
    use_blend: bool
    weights: list[float] | None = None
    without: list[float] | None = None
    validation_blend_rmse: float | None = None
    parts: DataFrame | None = None  # test parts already scored (a blend without refit)


def train(spark: SparkSession, config: Config, pipeline_run: str | None = None) -> TrainResult:
    """Run the whole training pipeline; see the module docstring. ``pipeline_run``: a
    scheduler's run id to tag the run with (``register --pipeline-run`` finds it by it)."""
    pipeline = Pipeline(spark, config)
    try:
        return _train(pipeline, pipeline_run)
    finally:
        pipeline.cache.release()


def _set_checkpoint_dir(p: Pipeline) -> None:
    """Where ALS cuts its lineage every ``checkpointInterval`` iterations. A Spark Connect
    client cannot set it: the server's ``spark.checkpoint.dir`` applies."""
    if is_connect(p.spark):
        logger.info("Spark Connect: ALS checkpoints go to the server's spark.checkpoint.dir, "
                    "if it sets one (train.checkpoint_dir applies to classic Spark only)")
        return
    p.spark.sparkContext.setCheckpointDir(p.conf.checkpoint_dir
                                          or lake_path(p.config, "_checkpoints"))


def _train(p: Pipeline, pipeline_run: str | None = None) -> TrainResult:
    import mlflow

    source, method, split, counts = p.split()
    _set_checkpoint_dir(p)
    points = grid.expand(p.conf.grid)
    experiment_id = tracking.configure(p.config)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as parent:
        run_id = parent.info.run_id
        _log_inputs(source, method, p.config, points, counts, p, pipeline_run)
        held_out = _baselines(p, split, source)
        search = _search(p, points, held_out, experiment_id, run_id)
        final = _final_model(p, search, held_out)
        with p.stages("test scoring"):
            parts = final.parts
            if parts is None:
                tagged_test = held_out.test.withColumn(TAG, F.lit(TEST_TAG))
                parts = p.parts(final.model, final.fit, tagged_test, final.data)
            test_errors = p.test_errors(final.model, parts)
            mean_errors, bias_errors = baseline_errors(
                held_out.test, final.data.mean, final.data.biases[held_out.baseline_reg],
                held_out.low, held_out.high)
        baseline_rmse = {"global_mean": mean_errors.rmse, "bias": bias_errors.rmse}
        left_out = {}
        not_the_probe = why_not_the_prize_probe(method, held_out.test,
                                                test_errors[PREDICTION].count)
        if not_the_probe is None:
            baseline_rmse["cinematch"] = metrics.CINEMATCH_RMSE["probe"]
        else:
            left_out["cinematch"] = not_the_probe
            logger.info("Cinematch's lift left out: %s", not_the_probe)
        model_rmse = test_errors[PREDICTION].rmse
        lift = {name: metrics.lift_pct(value, model_rmse) for name, value in baseline_rmse.items()}
        with p.stages("model logging"):
            model_uri, spark_model_uri = _log_model(p, search, held_out, final, test_errors,
                                                    baseline_rmse, lift)
            train_runs.log_left_out(left_out)
        # A side measure: it runs once the model is safe in the run.
        with p.stages("ranking quality"):
            ranks = _ranking(p, final, held_out)
            train_runs.log_ranking(ranks)
    return TrainResult(run_id, source.version, method, counts, len(points),
                       search.chosen.point.params(), search.chosen.validation_rmse, test_errors,
                       final.weights, baseline_rmse, lift, model_uri, spark_model_uri,
                       final.model.nbytes(), p.stages, left_out, ranks)


def _ranking(p: Pipeline, final: FinalModel, held_out: HeldOut) -> dict[str, dict[str, float]]:
    """The final model's top-10 quality on sampled test users, beside popularity's (none with
    ``train.ranking_users: 0``)."""
    if not p.conf.ranking_users:
        return {}
    figures = ranking.model_and_popularity(
        final.model, lambda sample: als.user_side(final.fit, sample), held_out.test,
        final.data.history(), p.conf.ranking_users, p.conf.seed,
        scoring.bucket_count(0, p.parallelism))
    logger.info("top-10 on %d test users: model precision %.4f, recall %.4f, NDCG %.4f; "
                "popularity %.4f, %.4f, %.4f", figures["model"]["users"],
                *(figures[who][f"{name}_at_10"] for who in ("model", "popularity")
                  for name in ("precision", "recall", "ndcg")))
    return figures


def _baselines(p: Pipeline, split: DataFrame, source: data.TrainingData) -> HeldOut:
    """Cache the three parts, fit mu + b_u + b_i on training for every grid ``bias_reg``."""
    low, high = source.low, source.high
    with p.stages("baselines"):
        validation = p.cache(p.part(split, splits.VALIDATION))
        test = p.cache(p.part(split, splits.TEST))
        bias_regs = sorted({float(r) for r in p.conf.grid.bias_reg})
        time_regs = _time_regs(p, p.part(split, splits.TRAIN), validation, bias_regs[0], low,
                               high)
        fit_data = replace(prepare(p.part(split, splits.TRAIN), bias_regs, p.conf.bias_passes,
                                   p.cache, time_regs), unrated=source.unrated)
        validation.count(), test.count()
        p.size_blocks(fit_data.rows)
        # Every later step reads the three cached parts: the split itself can go.
        split.unpersist()
        # Tune the bias baseline's regularisation on validation like the model's, so the
        # baseline the lift is measured against is as good as it can be.
        bias_validation = {reg: baseline_errors(validation, fit_data.mean, b, low, high)[1].rmse
                           for reg, b in fit_data.biases.items()}
        baseline_reg = min(bias_validation, key=lambda r: (bias_validation[r], r))
    return HeldOut(validation, test, fit_data, baseline_reg, low, high, time_regs)


def _time_regs(p: Pipeline, train: DataFrame, validation: DataFrame, bias_reg: float,
               low: float, high: float) -> TimeRegs | None:
    """The time-aware baseline's (reg_bin, reg_alpha) with the lowest validation RMSE of the
    baseline alone (at ``bias_reg``); None without ``train.time``, or when the static
    mu + b_u + b_i scores better still (it is a candidate whenever there is a choice to make:
    data without drifts in time, such as generated corpora, is better off without the extra
    parameters)."""
    conf = p.conf.time
    if not conf.enabled:
        return None
    choices = [TimeRegs(conf.bins, float(b), float(a))
               for b in sorted(set(conf.reg_bin)) for a in sorted(set(conf.reg_alpha))]
    if len(choices) == 1:
        return choices[0]
    ratings = train.select(*p.columns).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        mean = float(ratings.agg(F.avg(RATING)).first()[0])
        rmse = {}
        for regs in [None, *choices]:
            fitted = fit_baseline(ratings, bias_reg, p.conf.bias_passes, mean, regs)
            rmse[regs] = baseline_errors(validation, mean, fitted, low, high)[1].rmse
            logger.info("baseline %s: validation RMSE %.5f", "mu + b_u + b_i" if regs is None
                        else f"time-aware, reg_bin {regs.reg_bin}, reg_alpha {regs.reg_alpha}",
                        rmse[regs])
    finally:
        ratings.unpersist()
    best = min(choices, key=lambda regs: (rmse[regs], regs.reg_bin, regs.reg_alpha))
    if rmse[None] <= rmse[best]:
        logger.info("no time effects: the static baseline scores better on validation")
        return None
    return best


def _search(p: Pipeline, points: list, held_out: HeldOut, experiment_id: str,
            run_id: str) -> Search:
    """The grid on validation, a child run per point; the chosen point's fit on training."""
    import mlflow

    client = mlflow.MlflowClient()
    done = 0

    def on_result(result: grid.PointResult) -> None:
        nonlocal done
        done += 1
        train_runs.log_point(client, experiment_id, run_id, result, done)
        state = " (pruned)" if result.pruned else ""
        logger.info("grid %d/%d %s: validation RMSE %.5f, %.1f s%s", done, len(points),
                    result.point.label(), result.validation_rmse, result.seconds, state)

    started = time.monotonic()
    results, best_fit = p.run_grid(points, held_out.fit_data, held_out.validation, held_out.low,
                                   held_out.high, on_result)
    seconds = time.monotonic() - started
    chosen = grid.best(results)
    logger.info("best point: %s (validation RMSE %.5f)", chosen.point.label(),
                chosen.validation_rmse)
    on_train = best_fit if best_fit is not None and best_fit.point == chosen.point else None
    if on_train is None:
        with p.stages("refit on train"):  # a tie broken differently, or halving
            on_train = fit_point(chosen.point, held_out.fit_data, p.settings, held_out.low,
                                 held_out.high)
    return Search(results, chosen, on_train, seconds)


def _final_model(p: Pipeline, search: Search, held_out: HeldOut) -> FinalModel:
    """The chosen point refitted on train + validation (or its fit on train), with the
    neighbourhood blend when the config keeps it; blend weights learned on validation."""
    conf, point = p.conf, search.chosen.point
    refit, low, high = conf.refit_on_validation, held_out.low, held_out.high
    use_blend = conf.neighbours.enabled and point.kind == grid.RESIDUAL
    if conf.neighbours.enabled and not use_blend:
        # Worth a warning only when residual points lost; a plain-only grid asked for this.
        level = logging.WARNING if grid.RESIDUAL in conf.grid.kind else logging.INFO
        logger.log(level, "the best point is plain ALS, which has no residuals to blend a "
                   "neighbourhood with: the model is ALS alone")
    blended: dict[str, Any] = {}
    if use_blend:
        blended, arrays, implicit_on_train = _blend_weights(p, search, held_out)
    final_data, final_fit = held_out.fit_data, search.on_train
    if refit:
        with p.stages("refit"):
            regs = {held_out.baseline_reg} | ({point.bias_reg} if point.bias_reg is not None
                                              else set())
            final_data = prepare(final_data.ratings.unionByName(
                held_out.validation.select(*final_data.ratings.columns)),
                                 sorted(regs), conf.bias_passes, p.cache, held_out.time_regs)
            final_data = replace(final_data, unrated=held_out.fit_data.unrated)
            final_fit = fit_point(point, final_data, p.settings, low, high)
            held_out.fit_data.release()  # the final data is cached: the training part can go
    model = p.with_day_bias(als.export_factors(final_fit))
    if use_blend:
        if refit:
            with p.stages("refit neighbourhood"):
                arrays = p.neighbour_arrays(final_data.residuals[point.bias_reg],
                                            final_data.rows, model.movie_ids)
            term = None
            if blended["implicit"]:
                with p.stages("refit implicit feedback"):
                    term = p.implicit_term(final_data, point.bias_reg, model.movie_ids)
        else:
            term = implicit_on_train
        model = p.with_neighbourhood(model, arrays, term, blended["weights"], blended["without"])
    blended.pop("implicit", None)
    return FinalModel(model, final_fit, final_data, use_blend, **blended)


def _blend_weights(p: Pipeline, search: Search, held_out: HeldOut):
    """The neighbourhood and implicit term of the chosen point's training fit and the blend
    weights learned on validation: (FinalModel fields, the neighbour arrays, the term)."""
    fit_data, point, refit = held_out.fit_data, search.chosen.point, p.conf.refit_on_validation
    tagged_validation = held_out.validation.withColumn(TAG, F.lit(VALIDATION_TAG))
    tagged_test = held_out.test.withColumn(TAG, F.lit(TEST_TAG))
    with p.stages("neighbourhood"):
        movie_side = p.with_day_bias(als.export_movie_side(search.on_train))
        arrays = p.neighbour_arrays(fit_data.residuals[point.bias_reg], fit_data.rows,
                                    movie_side.movie_ids)
    term = None
    if p.conf.implicit.enabled:
        with p.stages("implicit feedback"):
            term = p.implicit_term(fit_data, point.bias_reg, movie_side.movie_ids)
    with p.stages("validation scoring"):
        # Without a refit the test parts come from the same fit: score them in one pass.
        wanted = tagged_validation if refit else tagged_validation.unionByName(tagged_test)
        parts = p.parts(p.with_neighbourhood(movie_side, arrays, term), search.on_train, wanted,
                        fit_data)
        on_validation = parts.where(F.col(TAG) == VALIDATION_TAG)
        features = blend.features(term is not None, movie_side.time is not None
                                  and movie_side.time.day_reg is not None)
        nested = blend.fit_nested_weights(on_validation, features)
        without, weights = nested[blend.HISTORY_FREE], nested[-1]
        validation_rmse = metrics.errors(on_validation.withColumn(
            PREDICTION, Rule.linear(weights, held_out.low, held_out.high, features).column())).rmse
    logger.info("blend weights (intercept, %s) %s, without a history %s: validation RMSE "
                "%.5f", ", ".join(features), ", ".join(f"{w:.4f}" for w in weights),
                ", ".join(f"{w:.4f}" for w in without), validation_rmse)
    return ({"weights": weights, "without": without, "validation_blend_rmse": validation_rmse,
             "parts": None if refit else parts, "implicit": term is not None}, arrays, term)


def _log_model(p: Pipeline, search: Search, held_out: HeldOut, final: FinalModel,
               test_errors: dict[str, metrics.Errors], baseline_rmse: dict[str, float],
               lift: dict[str, float]) -> tuple[str, str | None]:
    """Params, metrics, plots, the pyfunc (and the Spark ML form) into the active run; their
    URIs."""
    import mlflow

    chosen, model_errors = search.chosen, test_errors[PREDICTION]
    blend_params = {}
    if final.use_blend:
        features = final.model.rule().parts
        blend_params = {**{f"neighbours_{k}": v
                           for k, v in p.conf.neighbours.model_dump().items()},
                        **{f"implicit_{k}": v
                           for k, v in p.conf.implicit.model_dump().items()},
                        **{f"blend_weight_{name}": w for name, w in
                           zip(("intercept",) + features, final.weights)},
                        **{f"blend_weight_without_history_{name}": w for name, w in
                           zip(("intercept",) + features[:blend.HISTORY_FREE], final.without)}}
    model_name = "blend\n(ALS + neighbours)" if final.use_blend else f"{chosen.point.kind} ALS"
    train_runs.log_outcome(
        chosen, {"baseline_bias_reg": held_out.baseline_reg, "refit": p.conf.refit_on_validation,
                 "als_blocks": p.settings.num_blocks, "blend": final.use_blend,
                 "time_effects": held_out.time_regs is not None,
                 **(held_out.time_regs.params() | {"time_day_reg": p.conf.time.day_reg}
                    if held_out.time_regs else {}), **blend_params},
        test_errors, baseline_rmse, lift,
        train_runs.outcome_figures(search.results, model_errors.rmse, baseline_rmse, model_name),
        validation_blend_rmse=final.validation_blend_rmse if final.use_blend else None,
        grid_seconds=search.seconds, model_bytes=final.model.nbytes())
    # The gate's RMSE, as a param: fixed from now on, where a metric can be logged over.
    mlflow.log_params(gate.test_rmse_param(model_errors.rmse))
    model_info = tracking.log_factor_model(final.model)
    train_runs.log_model_uri(model_info.model_uri)
    # What the artifact store holds now, fixed as a param: register and every load check it.
    mlflow.log_param(model_integrity.DIGEST_PARAM, model_integrity.digest_of(model_info.model_uri))
    spark_model_uri = None
    if p.conf.log_spark_model and is_connect(p.spark):
        logger.warning("Spark Connect: the Spark ML form of the model is not logged (it is built "
                       "through the JVM); the pyfunc model is logged as always")
    elif p.conf.log_spark_model and final.model.time is not None:
        logger.warning("the Spark ML form of the model is not logged: it would score every "
                       "rating at one day, and the model has time effects (train.time); the "
                       "pyfunc model is logged as always")
    elif p.conf.log_spark_model:
        # A PipelineModel cannot join each user's ratings for the neighbourhood term:
        # the Spark form holds the ALS part (baseline + p.q), scored as test_rmse_als.
        dfs_tmpdir = p.config.mlflow.dfs_tmpdir or lake_path(p.config, "_tmp/mlflow")
        spark_model_uri = tracking.log_spark_model(
            sparkmodel.build(p.spark, final.model), dfs_tmpdir).model_uri
        train_runs.log_spark_model(spark_model_uri, "baseline + ALS factors")
    train_runs.log_stages(p.stages.as_list())
    return model_info.model_uri, spark_model_uri


def lake_path(config: Config, name: str) -> str:
    return lake.table_path(config.lake.root, name)


def data_identity(spark: SparkSession, root: str, source: data.TrainingData) -> gate.DataIdentity:
    """The exact identity of the data a run reads (table ids, paths, versions)."""
    probe_path = lake.table_path(root, "probe") if source.probe_version is not None else None
    qualifying_version = None if source.unrated is None else source.snapshot.version("qualifying")
    qualifying_path = (lake.table_path(root, "qualifying") if qualifying_version is not None
                       else None)
    return gate.DataIdentity(
        lake.absolute_root(root), lake.table_id(spark, source.ratings_path),
        source.ratings_path, source.version,
        lake.table_id(spark, probe_path) if probe_path else None, probe_path,
        source.probe_version,
        lake.table_id(spark, qualifying_path) if qualifying_path else None, qualifying_path,
        qualifying_version)


def _dataset(source: data.TrainingData):
    """The ratings table at its version as an MLflow dataset input: metadata only.
    (``mlflow.data.from_spark`` profiles the frame with an approximate count through the
    Python RDD API: a background job that streams every rating through a Python worker.)"""
    import hashlib

    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    types = {"int": "integer", "float": "float", "double": "double", "date": "datetime",
             "bigint": "long", "string": "string"}
    schema = Schema([ColSpec(types.get(field.dataType.simpleString(), "string"), field.name)
                     for field in source.ratings.schema.fields])
    digest = hashlib.sha256(f"{source.ratings_path}@{source.version}".encode()).hexdigest()[:8]
    return MetaDataset(DeltaDatasetSource(path=redact_text(source.ratings_path),
                                          delta_table_version=source.version),
                       name="ratings", digest=digest, schema=schema)


def _log_inputs(source: data.TrainingData, method: str, config: Config, points,
                counts: dict[str, int], p: Pipeline, pipeline_run: str | None) -> None:
    identity = data_identity(p.spark, config.lake.root, source)
    split_settings = config.split.model_dump()
    train_runs.log_start(tracking.git_commit(), source.ratings_path,
                         identity.split_signature(method, split_settings), pipeline_run)
    # Immutable (params): what the gate compares and re-scores on (prizeflow.gate).
    train_runs.log_inputs(
        _dataset(source), identity.params(method, split_settings),
        {"data_version": source.version, "split_method": method,
         "probe_version": source.probe_version,
         # The qualifying pairs in every user's N(u) (none: the lake has no such table).
         "qualifying_version": identity.qualifying_version,
         # The complete ingest it read: every table at the version it left.
         "ingest_id": source.snapshot.ingest_id if source.snapshot else None,
         "grid_points": len(points), "parallelism": p.conf.parallelism,
         "session_parallelism": p.parallelism, "halving": p.conf.halving.enabled,
         **{f"split_{k}": v for k, v in split_settings.items()}},
        counts, describe(config))
