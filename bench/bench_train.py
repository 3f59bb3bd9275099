"""Training benchmarks: quality on MovieLens 100K, grid speed vs the textbook way, ALS scaling.

    .venv/bin/python bench/bench_train.py quality [--folds 5] [--no-ablation] [--no-plain] [--blend]
    .venv/bin/python bench/bench_train.py speed [--ratings 1000000] [--runs 3]
    .venv/bin/python bench/bench_train.py blend [--ratings 1000000] [--runs 3]
    .venv/bin/python bench/bench_train.py iterations [--sizes 1000000 10000000]
    .venv/bin/python bench/bench_train.py iterations --lake LAKE --conf conf/full.yaml \
        --holdout 0.034 --blocks 2 10 --runs 1     # an existing lake, ALS blocks compared
    .venv/bin/python bench/bench_train.py checkpoints --lake LAKE [--runs 3] [--iters 10]

quality: ``../shared/data/ml-100k`` ingested once; for each of 5 hash folds (test = fold k, the
  issue's protocol) ``prizeflow train`` with the default config (grid + neighbourhood blend,
  implicit feedback, time effects), the ablation (the same without the day term, without the
  time effects, without implicit feedback, and without both: the model before issue 31), then
  the same grid as plain ALS; per fold the test RMSE of each, of the blend's residual ALS part
  alone and of its baseline. Target (issue 31): mean <= 0.895. ``--blend``: per fold also the
  default model and a plain ALS trained without a refit, registered, and ``prizeflow blend``
  of the two (their test RMSEs and the blend's).
speed: a generated corpus; the default grid run the textbook way (TrainValidationSplit,
  parallelism 1, plain ALS, then the best model scored on the test set) vs ``prizeflow train``
  (same points, same split, parallelism from conf, neighbourhood blend off so both do the same
  work), alternating in one session. Target >= 1.5x.
blend: what the neighbourhood blend costs: ``prizeflow train`` (default config, hash split) on a
  generated corpus with ``train.neighbours.enabled`` false and true, alternating; medians and
  both test RMSEs.
iterations: seconds per ALS iteration (residual, rank 20) from fits of 2 and 6 iterations
  (``--iters``), per number of ALS blocks (``--blocks``) and order of the training ratings
  (``--orders``).
checkpoints: one residual ALS fit (rank 20, ``--iters`` iterations, the residuals of
  ``iterations``) with the checkpoint interval prizeflow gives MLlib (:func:`prizeflow.als.
  checkpoint_interval`: the last iteration checkpointed) against the configured one as it is,
  alternating; the fits' medians, their ratio, and the largest difference between the two
  arms' factors.
Each prints its figures and the command, and writes bench/out/train-<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ML100K = HERE.parent.parent / "shared" / "data" / "ml-100k"


def _session(lake: Path, conf: str = "conf/local.yaml", extra: tuple[str, ...] = ()):
    from prizeflow.config import load_config
    from prizeflow.spark import get_spark

    os.chdir(HERE.parent)
    config = load_config(conf, [f"lake.root={lake}",
                                f"mlflow.tracking_uri=sqlite:///{lake}/mlflow.db", *extra])
    return get_spark(config), config


def _ingest(spark, config, source: Path) -> dict:
    from prizeflow import ingestion

    shutil.rmtree(config.lake.root, ignore_errors=True)
    return ingestion.ingest(spark, config, str(source))


def _train(spark, config, overrides: list[str]) -> dict:
    from prizeflow import training
    from prizeflow.config import load_config

    merged = load_config("conf/local.yaml", overrides)
    run_config = config.model_copy(update={"data": merged.data, "split": merged.split,
                                           "train": merged.train})
    t0 = time.monotonic()
    summary = training.train(spark, run_config).summary()
    summary["seconds"] = time.monotonic() - t0
    return summary


def _machine(spark) -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "spark": spark.version,
            "master": spark.sparkContext.master, "platform": platform.platform()}


def _finish(mode: str, command: str, spark, payload: dict) -> None:
    OUT.mkdir(exist_ok=True)
    payload = {"command": command, "machine": _machine(spark), **payload}
    (OUT / f"train-{mode}.json").write_text(json.dumps(payload, indent=2))
    print(f"\ncommand: {command}\nmachine: {payload['machine']}")


# The ablation of quality: each variant is the default config with one override set (the
# parts added by issue 31 taken out one at a time, then all of them: the model before it).
ABLATION = {
    "without_day_term": ["train.time.day_reg=null"],
    "without_time": ["train.time.enabled=false"],
    "without_implicit": ["train.implicit.enabled=false"],
    "before_issue_31": ["train.time.enabled=false", "train.implicit.enabled=false"],
}


def quality(args, command: str) -> None:
    if not ML100K.is_dir():
        sys.exit(f"{ML100K} is not present")
    lake = OUT / "lake-ml100k"
    spark, config = _session(lake)
    _ingest(spark, config, ML100K)
    rows = []
    variants = {} if args.no_ablation else ABLATION
    for fold in range(args.folds):
        split = ["split.method=hash", f"split.folds={args.folds}", f"split.fold={fold}"]
        ours = _train(spark, config, split)
        others = {name: _train(spark, config, split + overrides)
                  for name, overrides in variants.items()}
        plain = None if args.no_plain else _train(spark, config,
                                                  split + ["train.grid.kind=[plain]"])
        blended = _blend_of_two(spark, config, split, fold) if args.blend else {}
        rows.append({"fold": fold, "prizeflow": ours["test_rmse"], **blended,
                     **{name: other["test_rmse"] for name, other in others.items()},
                     "als_part": ours["test_rmse_als"],
                     "plain_als": plain["test_rmse"] if plain else None,
                     "blend_weights": ours["blend_weights"],
                     "bias": ours["baselines"]["bias"], "global_mean": ours["baselines"]["global_mean"],
                     "best_params": ours["best_params"],
                     "plain_best": plain["best_params"] if plain else None,
                     "seconds": ours["seconds"],
                     **{f"seconds_{name}": other["seconds"] for name, other in others.items()}})
        print(f"fold {fold}: prizeflow {ours['test_rmse']:.4f}  "
              + "  ".join(f"{name} {other['test_rmse']:.4f}" for name, other in others.items())
              + f"  its ALS part {ours['test_rmse_als']:.4f}  plain ALS "
              + (f"{plain['test_rmse']:.4f}" if plain else "-")
              + f"  baseline {ours['baselines']['bias']:.4f}  best {ours['best_params']}"
              + "".join(f"  {k} {v:.4f}" for k, v in blended.items() if k in BLEND_COLUMNS),
              flush=True)
    names = ("prizeflow", *variants, "als_part", "bias", "global_mean") + (
        () if args.no_plain else ("plain_als",)) + (BLEND_COLUMNS if args.blend else ())
    mean = {k: statistics.mean(r[k] for r in rows) for k in names}
    target = 0.895
    _finish("quality", command, spark, {"folds": rows, "mean": mean, "target": target})
    shown = [k for k in names if k != "global_mean"]
    print("fold " + " ".join(f"{k:>18}" for k in shown))
    for r in rows:
        print(f"{r['fold']:>4} " + " ".join(
            f"{r[k]:>18.4f}" if r[k] is not None else f"{'-':>18}" for k in shown))
    print("mean " + " ".join(f"{mean[k]:>18.4f}" for k in shown)
          + f"\n(target: prizeflow mean <= {target}: "
          f"{'met' if mean['prizeflow'] <= target else 'NOT met'})")
    spark.stop()


# `--blend`: per fold, two different models trained without a refit (the default model, and a
# plain ALS), each registered under the fold's own registered model, and `prizeflow blend` of
# the two: its test RMSE beside theirs and beside the default model's (with its refit).
BLEND_COLUMNS = ("blend_member_default", "blend_member_plain", "blend_of_both")


def _blend_of_two(spark, config, split: list[str], fold: int) -> dict:
    from prizeflow import blending, registry

    fold_config = config.model_copy(update={"mlflow": config.mlflow.model_copy(
        update={"registered_model": f"ml100k-fold-{fold}"})})
    no_refit = split + ["train.refit_on_validation=false"]
    members = {"default": _train(spark, fold_config, no_refit),
               "plain": _train(spark, fold_config, no_refit + ["train.grid.kind=[plain]"])}
    versions = [registry.register(spark, fold_config, m["run_id"])["version"]
                for m in members.values()]
    t0 = time.monotonic()
    summary = blending.blend(spark, fold_config, ",".join(map(str, versions)))
    return {"blend_member_default": members["default"]["test_rmse"],
            "blend_member_plain": members["plain"]["test_rmse"],
            "blend_of_both": summary["test_rmse"], "blend_weights_members": summary["weights"],
            "blend_seconds": time.monotonic() - t0}


def _textbook(spark, config, seed: int) -> dict:
    """The default grid as most tutorials run it: TrainValidationSplit over plain ALS."""
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit
    from pyspark.sql import functions as F

    from prizeflow import data as training_data
    from prizeflow import splits

    # Without a checkpoint directory ALS ignores checkpointInterval and a 20-iteration fit
    # fails with StackOverflowError while serialising its lineage (seen here at 1M ratings).
    spark.sparkContext.setCheckpointDir(str(Path(config.lake.root) / "_checkpoints"))
    data = training_data.load_training_data(spark, config)
    split = splits.hash_split(data.ratings, config.split.test_fraction,
                              config.split.validation_fraction, config.split.seed)
    t0 = time.monotonic()
    fit_part = splits.part(split, splits.TRAIN, splits.VALIDATION).select(
        "user_id", "movie_id", "rating")
    test = splits.part(split, splits.TEST).select("user_id", "movie_id", "rating")
    als = ALS(userCol="user_id", itemCol="movie_id", ratingCol="rating", seed=seed,
              coldStartStrategy="drop")
    grid_conf = config.train.grid
    grid = (ParamGridBuilder().addGrid(als.rank, grid_conf.rank)
            .addGrid(als.regParam, [float(r) for r in grid_conf.reg_param])
            .addGrid(als.maxIter, grid_conf.max_iter).build())
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="rating", predictionCol="prediction")
    validation_share = config.split.validation_fraction / (1 - config.split.test_fraction)
    tvs = TrainValidationSplit(estimator=als, estimatorParamMaps=grid, evaluator=evaluator,
                               trainRatio=1 - validation_share, parallelism=1, seed=seed)
    model = tvs.fit(fit_part)
    scored = model.bestModel.transform(test)
    rmse_dropped = evaluator.evaluate(scored)
    seconds = time.monotonic() - t0
    kept = scored.count()
    total = test.count()
    mean = fit_part.agg(F.avg("rating")).first()[0]
    # Over all test rows, the dropped cold-start rows predicted by the global mean:
    full = (model.bestModel.setColdStartStrategy("nan").transform(test)
            .withColumn("prediction", F.coalesce(F.nanvl("prediction", F.lit(None)), F.lit(mean))))
    rmse_all = evaluator.evaluate(full)
    best = model.bestModel
    return {"seconds": seconds, "test_rmse_dropping_cold_start": rmse_dropped,
            "test_rmse_all_rows": rmse_all, "test_rows_scored": kept, "test_rows": total,
            "best_rank": best.rank}


def speed(args, command: str) -> None:
    from prizeflow.generate import generate_corpus, make_spec

    corpus = OUT / f"corpus-{args.ratings}-training_set"
    if not corpus.exists():
        generate_corpus(make_spec(corpus, args.ratings, seed=42))
    lake = OUT / "lake-speed"
    spark, config = _session(lake)
    _ingest(spark, config, corpus)
    config = config.override("split.method=hash")
    same_work = ["split.method=hash", "train.neighbours.enabled=false"]
    variants = {"prizeflow": same_work,
                "prizeflow_halving": same_work + ["train.halving.enabled=true"]}
    times: dict[str, list[float]] = {"textbook": [], **{k: [] for k in variants}}
    rmse: dict[str, float] = {}
    details = {}
    for run in range(args.runs):
        result = _textbook(spark, config, seed=42)
        times["textbook"].append(result["seconds"])
        rmse["textbook"] = result["test_rmse_all_rows"]
        details["textbook"] = result
        line = [f"run {run + 1}: textbook {result['seconds']:.1f}s rmse {rmse['textbook']:.4f}"]
        for name, overrides in variants.items():
            summary = _train(spark, config, overrides)
            times[name].append(summary["seconds"])
            rmse[name] = summary["test_rmse"]
            details[name] = {k: summary[k] for k in ("best_params", "test_rmse", "baselines")}
            line.append(f"{name} {summary['seconds']:.1f}s rmse {summary['test_rmse']:.4f}")
        print("  ".join(line), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: medians["textbook"] / medians[k] for k in variants}
    _finish("speed", command, spark, {"ratings": args.ratings, "runs": args.runs, "times": times,
                                      "medians": medians, "speedup": ratios, "test_rmse": rmse,
                                      "details": details})
    print(f"{'method':<18} {'median s':>9} {'speed-up':>9} {'test RMSE':>10}")
    for name in times:
        speedup = ratios.get(name, 1.0)
        print(f"{name:<18} {medians[name]:>9.1f} {speedup:>8.2f}x {rmse[name]:>10.4f}")
    spark.stop()


def blend_cost(args, command: str) -> None:
    from prizeflow.generate import generate_corpus, make_spec

    corpus = OUT / f"corpus-{args.ratings}-training_set"
    if not corpus.exists():
        generate_corpus(make_spec(corpus, args.ratings, seed=42))
    spark, config = _session(OUT / "lake-blend")
    _ingest(spark, config, corpus)
    variants = {"als_only": ["split.method=hash", "train.neighbours.enabled=false"],
                "blend": ["split.method=hash", "train.neighbours.enabled=true"]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    rmse: dict[str, float] = {}
    for run in range(args.runs):
        line = [f"run {run + 1}:"]
        for name, overrides in variants.items():
            summary = _train(spark, config, overrides)
            times[name].append(summary["seconds"])
            rmse[name] = summary["test_rmse"]
            line.append(f"{name} {summary['seconds']:.1f}s rmse {summary['test_rmse']:.4f}")
        print("  ".join(line), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    _finish("blend", command, spark, {"ratings": args.ratings, "runs": args.runs, "times": times,
                                      "medians": medians, "test_rmse": rmse,
                                      "ratio": medians["blend"] / medians["als_only"]})
    print(f"{'variant':<10} {'median s':>9} {'test RMSE':>10}")
    for name in variants:
        print(f"{name:<10} {medians[name]:>9.1f} {rmse[name]:>10.4f}")
    print(f"blend / ALS only: {medians['blend'] / medians['als_only']:.2f}x the time")
    spark.stop()


def _training_part(spark, config, holdout: float):
    """The lake's ratings less a hashed ``holdout``, as residuals of a bias baseline (reg 3,
    3 passes), cached: the cache and what ``training.prepare`` returns."""
    from prizeflow import data, splits, training

    source = data.load_training_data(spark, config)
    ratings = splits.part(splits.hash_split(source.ratings, holdout / 2, holdout / 2, 42),
                          splits.TRAIN)
    cache = training.Cache()
    return cache, training.prepare(ratings, [3.0], 3, cache)


def iterations(args, command: str) -> None:
    from prizeflow import als, grid, partitions, training
    from prizeflow.columns import MOVIE_ID, USER_ID
    from prizeflow.generate import generate_corpus, make_spec

    rows = []
    for size in ([None] if args.lake else args.sizes):
        if args.lake:
            # An existing lake (e.g. bench_scale --keep's): its ratings, no new ingest.
            spark, config = _session(args.lake, args.conf, tuple(args.set))
        else:
            corpus = OUT / f"corpus-{size}-training_set"
            if not corpus.exists():
                generate_corpus(make_spec(corpus, size, seed=42))
            spark, config = _session(OUT / "lake-iterations", args.conf, tuple(args.set))
            _ingest(spark, config, corpus)
        cache, fit_data = _training_part(spark, config, args.holdout)
        arms = [(blocks, order) for order in args.orders
                for blocks in args.blocks or [config.train.num_blocks
                                              or partitions.parallelism(spark)]]
        current_order = "as-is"
        for blocks, order in arms:
            if order != current_order:
                # The training ratings in another order (cached anew), from the one prepare
                # leaves ("as-is": the lake's, each movie's ratings together, users in file
                # order): "hashed" (hash-partitioned and sorted by (user, movie), as the probe
                # split's join leaves them), "user" (sorted by user inside each partition).
                previous = fit_data.residuals[3.0]
                reordered = {
                    "hashed": lambda f: f.repartition(USER_ID, MOVIE_ID)
                    .sortWithinPartitions(USER_ID, MOVIE_ID),
                    "user": lambda f: f.sortWithinPartitions(USER_ID, MOVIE_ID)}[order]
                fit_data.residuals[3.0] = cache(reordered(previous))
                fit_data.residuals[3.0].count()
                previous.unpersist()
                current_order = order
            settings = als.AlsSettings(42, blocks, 10)
            timings = {}
            for iters in args.iters:
                point = grid.GridPoint("residual", args.rank, 0.1, iters, 3.0)
                samples = []
                for _ in range(args.runs):
                    t0 = time.monotonic()
                    model = training.fit_point(point, fit_data, settings, 1.0, 5.0)
                    model.als.userFactors.count()
                    samples.append(time.monotonic() - t0)
                timings[iters] = statistics.median(samples)
            low, high = min(args.iters), max(args.iters)
            per_iteration = (timings[high] - timings[low]) / (high - low)
            rows.append({"ratings": size or fit_data.rows, "train_ratings": fit_data.rows,
                         "rank": args.rank, "blocks": blocks, "order": order,
                         **{f"fit_{i}_iter_s": timings[i] for i in args.iters},
                         "s_per_iteration": per_iteration,
                         "s_per_iteration_per_m": per_iteration / (fit_data.rows / 1e6)})
            print(f"{fit_data.rows:>11,} training ratings, {blocks} blocks, {order}: " + ", ".join(
                f"fit {i} iter {timings[i]:.1f}s" for i in args.iters)
                + f", {per_iteration:.2f} s/iteration "
                f"({per_iteration / (fit_data.rows / 1e6):.3f} s per M ratings)", flush=True)
        cache.release()
    _finish("iterations", command, spark, {"results": rows})
    spark.stop()


def checkpoints(args, command: str) -> None:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from prizeflow import als, partitions
    from prizeflow.columns import MOVIE_ID, USER_ID

    spark, config = _session(args.lake, args.conf, tuple(args.set))
    spark.sparkContext.setCheckpointDir(str(args.lake / "_checkpoints"))
    cache, fit_data = _training_part(spark, config, args.holdout)
    residuals = fit_data.residuals[3.0]
    blocks = config.train.num_blocks or als.default_blocks(fit_data.rows,
                                                           partitions.parallelism(spark))
    configured = config.train.checkpoint_interval
    arms = {"prizeflow": als.checkpoint_interval(args.iters, configured), "as configured": configured}

    def fit(interval: int):
        estimator = ALS(rank=args.rank, regParam=0.1, maxIter=args.iters, userCol=USER_ID,
                        itemCol=MOVIE_ID, ratingCol="residual", seed=42, numUserBlocks=blocks,
                        numItemBlocks=blocks, checkpointInterval=interval)
        t0 = time.monotonic()
        model = estimator.fit(residuals)  # counts both factor tables before it returns
        return model, time.monotonic() - t0

    seconds: dict[str, list[float]] = {name: [] for name in arms}
    models = {}
    for run in range(args.runs):
        for name, interval in arms.items():
            models[name], took = fit(interval)
            seconds[name].append(took)
            print(f"run {run + 1}: {name} (interval {interval}) {took:.1f}s", flush=True)
    a, b = models["prizeflow"], models["as configured"]
    difference = {}
    for side in ("userFactors", "itemFactors"):
        pairs = getattr(a, side).alias("a").join(getattr(b, side).alias("b"), "id", "full_outer")
        worst = pairs.select(F.max(F.aggregate(
            F.zip_with("a.features", "b.features", lambda x, y: F.abs(x - y)), F.lit(0.0),
            lambda acc, x: F.greatest(acc, x))).alias("worst"),
            F.count(F.when(F.col("a.id").isNull() | F.col("b.id").isNull(), 1)).alias("lone"),
        ).first()
        difference[side] = {"max_abs_difference": worst.worst, "ids_in_one_only": worst.lone}
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = medians["prizeflow"] / medians["as configured"]
    print(f"\n{fit_data.rows:,} training ratings, rank {args.rank}, {args.iters} iterations, "
          f"{blocks} blocks")
    for name, interval in arms.items():
        print(f"{name:<14} interval {interval:>2}: median {medians[name]:.1f}s "
              f"{[round(v, 1) for v in seconds[name]]}")
    print(f"ratio prizeflow / as configured: {ratio:.3f}; factors: {difference}")
    cache.release()
    _finish("checkpoints", command, spark, {
        "train_ratings": fit_data.rows, "rank": args.rank, "iterations": args.iters,
        "blocks": blocks, "intervals": arms, "seconds": seconds, "medians": medians,
        "ratio": ratio, "factors": difference})
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--no-ablation", action="store_true",
                   help="leave out the runs without each of issue 31's parts")
    q.add_argument("--no-plain", action="store_true",
                   help="leave out the plain-ALS column (five fewer trainings)")
    q.add_argument("--blend", action="store_true",
                   help="also blend two registered models per fold (prizeflow blend): the "
                        "default model and a plain ALS, both trained without a refit")
    s = sub.add_parser("speed")
    s.add_argument("--ratings", type=int, default=1_000_000)
    s.add_argument("--runs", type=int, default=3)
    b = sub.add_parser("blend")
    b.add_argument("--ratings", type=int, default=1_000_000)
    b.add_argument("--runs", type=int, default=3)
    i = sub.add_parser("iterations")
    i.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    i.add_argument("--rank", type=int, default=20)
    i.add_argument("--runs", type=int, default=3)
    i.add_argument("--iters", type=int, nargs=2, default=[2, 6],
                   help="the two fit lengths whose difference gives one iteration's time")
    i.add_argument("--blocks", type=int, nargs="+",
                   help="ALS user and item blocks to compare (default: train.num_blocks or "
                        "the session's parallelism)")
    i.add_argument("--orders", nargs="+", default=["as-is"], choices=["as-is", "hashed", "user"],
                   help="the training ratings as prepare leaves them, hash-partitioned and "
                        "sorted by (user, movie), or sorted by user within each partition")
    i.add_argument("--lake", type=Path, help="use this lake's ratings instead of ingesting")
    i.add_argument("--conf", default="conf/local.yaml")
    i.add_argument("--set", action="append", default=[], help="a config override, as --set")
    i.add_argument("--holdout", type=float, default=0.2,
                   help="fraction hashed out of training (0.034: about 97M of the 100M)")
    c = sub.add_parser("checkpoints")
    c.add_argument("--lake", type=Path, required=True, help="the lake whose ratings to fit")
    c.add_argument("--conf", default="conf/local.yaml")
    c.add_argument("--set", action="append", default=[], help="a config override, as --set")
    c.add_argument("--rank", type=int, default=20)
    c.add_argument("--iters", type=int, default=10)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--holdout", type=float, default=0.034,
                   help="fraction hashed out of training (0.034: as conf/full.yaml's split)")
    args = parser.parse_args(argv)
    command = "python bench/bench_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    modes = {"quality": quality, "speed": speed, "blend": blend_cost, "iterations": iterations,
             "checkpoints": checkpoints}
    modes[args.mode](args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
