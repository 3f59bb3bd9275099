"""The time-aware baseline's fit (prizeflow.time_effects.fit_time_biases) against a reference
checkout's, alternating in one Spark session on the same cached ratings.

    .venv/bin/python bench/bench_baseline.py --reference DIR [--lake LAKE | --corpus DIR] \
        [--conf conf/full.yaml] [--runs 3]

``--reference``: a checkout (e.g. ``git worktree add /tmp/ref HEAD~1``) whose
``lib/prizeflow/time_effects.py`` is loaded beside this one; ``--lake``: an existing lake's
ratings (bench_scale --keep's), else ``--corpus`` is ingested into bench/out/lake-baseline.
The ratings are the lake's whole ``ratings`` table with their days, cached once; each fit uses
the config's ``train.time`` (first reg_bin and reg_alpha), ``bias_passes`` and the first
``bias_reg``. Prints each run, the medians and their ratio, and the largest difference between
the two fits' tables; writes bench/out/train-baseline-fit.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_train import OUT, _finish, _ingest, _session  # noqa: E402


def _reference_module(checkout: Path):
    spec = importlib.util.spec_from_file_location(
        "reference_time_effects", checkout / "lib" / "prizeflow" / "time_effects.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tables(fitted) -> dict:
    from prizeflow.columns import MOVIE_ID, USER_ID

    return {"users": {r[USER_ID]: (r["b_user"], r["mean_day"], r["alpha"])
                      for r in fitted.users.collect()},
            "movies": {r[MOVIE_ID]: (r["b_movie"],) for r in fitted.movies.collect()},
            "movie_bins": {(r[MOVIE_ID], r["time_bin"]): (r["b_bin"],)
                           for r in fitted.movie_bins.collect()}}


def _largest_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for name in a:
        if set(a[name]) != set(b[name]):
            raise SystemExit(f"the two fits' {name} tables have different keys")
        for key, values in a[name].items():
            worst = max(worst, *(abs(x - y) for x, y in zip(values, b[name][key])))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--lake", type=Path)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--conf", default="conf/full.yaml")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench_baseline.py",
                                                *(argv if argv is not None else sys.argv[1:])])
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from prizeflow import data, time_effects
    from prizeflow.columns import DAY, MOVIE_ID, RATING, USER_ID

    lake = args.lake or OUT / "lake-baseline"
    spark, config = _session(lake, args.conf)
    if args.lake is None:
        if args.corpus is None:
            raise SystemExit("give --lake or --corpus")
        _ingest(spark, config, args.corpus)
    ratings = time_effects.with_day(data.load_training_data(spark, config).ratings)
    ratings = ratings.select(USER_ID, MOVIE_ID, RATING, DAY).persist(StorageLevel.MEMORY_AND_DISK)
    mean, rows = ratings.agg(F.avg(RATING), F.count(F.lit(1))).first()
    conf = config.train
    fit_args = (conf.time.bins, float(sorted(conf.grid.bias_reg)[0]), float(conf.time.reg_bin[0]),
                float(conf.time.reg_alpha[0]), conf.bias_passes, float(mean))
    arms = {"this": time_effects, "reference": _reference_module(args.reference)}
    seconds = {name: [] for name in arms}
    tables = {}
    for run in range(args.runs):
        for name, module in arms.items():
            started = time.monotonic()
            fitted = module.fit_time_biases(ratings, *fit_args)
            seconds[name].append(time.monotonic() - started)
            print(f"run {run + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
            if run == 0:
                tables[name] = _tables(fitted)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    difference = _largest_difference(tables["this"], tables["reference"])
    ratio = medians["this"] / medians["reference"]
    print(f"{rows:,} ratings, bins {fit_args[0]}, passes {fit_args[4]}: this {medians['this']:.1f}"
          f" s, reference {medians['reference']:.1f} s (medians of {args.runs}), ratio "
          f"{ratio:.3f}; largest difference between the fits' tables {difference:.2e}")
    _finish("baseline-fit", command, spark,
            {"ratings": rows, "seconds": seconds, "medians": medians, "ratio": ratio,
             "largest_difference": difference, "fit_args": list(fit_args)})
    ratings.unpersist()
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
