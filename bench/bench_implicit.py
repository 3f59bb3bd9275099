"""What the implicit-feedback term (prizeflow.implicit) costs on a kept lake's ratings.

    .venv/bin/python bench/bench_implicit.py --work bench/out/scale-100480507 \
        [--conf conf/full.yaml] [--sample-users 0.1 1.0] [--runs 1]

``--work`` is a folder ``bench/bench_scale.py --keep`` left (``lake/``). The lake's ``ratings``
are cached once (not timed); then, ``--runs`` times, each step of the term is timed alone:
the implicit-feedback ALS's item factors (``train.implicit`` settings from ``--conf``) for each
``--sample-users`` share, and the per-movie ridge over every rating. The ridge's input is the
rating minus the global mean, not the bias baseline's residual: the cost is the same (one
double a row), and fitting the biases is the training's own stage, timed there. Prints the
figures and the command; writes bench/out/implicit-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--conf", default="conf/full.yaml")
    parser.add_argument("--sample-users", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    command = "python bench/bench_implicit.py " + " ".join(sys.argv[1:] if argv is None else argv)

    import numpy as np
    from pyspark.sql import functions as F

    from prizeflow import als, implicit, partitions
    from prizeflow.columns import MOVIE_ID, RATING, USER_ID
    from prizeflow.config import load_config
    from prizeflow.spark import get_spark

    os.chdir(HERE.parent)
    work = args.work.resolve()
    config = load_config(args.conf, [f"lake.root={work / 'lake'}"])
    spark = get_spark(config)
    conf = config.train.implicit
    ratings = spark.read.format("delta").load(str(work / "lake" / "ratings")).select(
        USER_ID, MOVIE_ID, RATING)
    mean = ratings.agg(F.avg(RATING)).first()[0]
    rows_frame = ratings.select(USER_ID, MOVIE_ID,
                                (F.col(RATING) - F.lit(mean)).alias("residual")).cache()
    rows = rows_frame.count()
    movie_ids = np.array(sorted(r[0] for r in rows_frame.select(MOVIE_ID).distinct().collect()),
                         dtype=np.int64)
    parallelism = partitions.parallelism(spark)
    blocks = config.train.num_blocks or als.default_blocks(rows, parallelism)
    print(f"{rows:,} ratings, {len(movie_ids):,} movies, {parallelism} cores, {blocks} ALS "
          f"blocks; implicit settings {conf.model_dump()}", flush=True)
    figures: dict[str, list[float]] = {}
    factors = None
    for run in range(args.runs):
        for share in args.sample_users:
            started = time.monotonic()
            factors = implicit.item_factors(rows_frame, movie_ids, conf.rank, conf.reg_param,
                                            conf.alpha, conf.max_iter, share, config.train.seed,
                                            blocks)
            seconds = time.monotonic() - started
            figures.setdefault(f"item factors, {share:g} of the users", []).append(seconds)
            print(f"run {run}: item factors from {share:g} of the users: {seconds:.1f} s",
                  flush=True)
        started = time.monotonic()
        weights = implicit.movie_weights(rows_frame, movie_ids, factors, conf.ridge, parallelism)
        seconds = time.monotonic() - started
        figures.setdefault("per-movie ridge, every rating", []).append(seconds)
        print(f"run {run}: per-movie ridge over {rows:,} ratings: {seconds:.1f} s "
              f"({int((np.abs(weights).sum(axis=1) > 0).sum()):,} movies with weights)",
              flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"median {name}: {value:.1f} s")
    print(f"command: {command}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "implicit-cost.json").write_text(json.dumps(
        {"command": command, "ratings": rows, "movies": len(movie_ids), "cores": parallelism,
         "blocks": blocks, "settings": conf.model_dump(), "runs": figures, "medians": medians},
        indent=2))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
