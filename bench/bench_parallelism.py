"""Does one config use the cores it is given? The ALS fit and the neighbourhood stage on
``local[1]`` against ``local[2]``, with the default config (no block or partition counts set).

    .venv/bin/python bench/bench_parallelism.py [--ratings 10000000] [--runs 3] [--set key=value ...]

A corpus of the Netflix Prize's shape (``prizeflow generate --ratings N --users N*480189/100480507
--movies 17770 --layout combined_data --seed 42``) is ingested once. Then each run is a fresh
process with its own master, alternating local[1] and local[2]: it splits the ratings (hash,
80/10/10), fits the bias baseline, and times (1) one residual ALS fit, rank 20, 10 iterations,
to materialised factors, and (2) the movie similarities of the training residuals
(``neighbours.similarities`` with the default k/shrink/keep/max_user_ratings) collected as the
model holds them. ALS blocks and shuffle partitions come from the session, as in every job.
Prints the medians and the local[2] / local[1] speed-ups (target >= 1.7x), writes
bench/out/parallelism.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))


def stage_times(lake: str, master: str, overrides: list[str]) -> dict:
    """In this process: a session on ``master``, then the two timed stages."""
    from prizeflow import als, data, neighbours, partitions, splits, training
    from prizeflow.config import load_config
    from prizeflow.spark import get_spark

    os.chdir(PROJECT)
    config = load_config("conf/local.yaml",
                         [f"lake.root={lake}", f"spark.master={master}", *overrides])
    spark = get_spark(config)
    spark.sparkContext.setCheckpointDir(str(Path(lake) / "_checkpoints"))
    source = data.load_training_data(spark, config)
    cache = training.Cache()
    train = splits.part(splits.hash_split(source.ratings, 0.1, 0.1, 42), splits.TRAIN)
    fit_data = training.prepare(train, [3.0], 3, cache)
    cores = partitions.parallelism(spark)
    settings = als.AlsSettings(42, config.train.num_blocks or cores, 10)
    point = als.GridPoint("residual", 20, 0.1, 10, 3.0)
    started = time.monotonic()
    model = training.fit_point(point, fit_data, settings, 1.0, 5.0)
    model.als.userFactors.count()
    model.als.itemFactors.count()
    als_seconds = time.monotonic() - started
    conf = config.train.neighbours
    started = time.monotonic()
    table = neighbours.similarities(fit_data.residuals[3.0], conf.shrink,
                                    conf.max_user_ratings, conf.keep, cores, fit_data.rows)
    rows = len(table.toPandas())
    neighbour_seconds = time.monotonic() - started
    cache.release()
    spark.stop()
    return {"master": master, "cores": cores, "als_blocks": settings.num_blocks,
            "shuffle_partitions": None, "als_seconds": als_seconds,
            "neighbourhood_seconds": neighbour_seconds, "neighbour_rows": rows,
            "train_ratings": fit_data.rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpora", type=Path, default=OUT / "corpora")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="dotted.key=value", help="config override for both masters")
    parser.add_argument("--child", nargs=2, metavar=("LAKE", "MASTER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(stage_times(*args.child, args.overrides)))
        return 0
    from bench_scale import PRIZEFLOW, corpus

    command = "python bench/bench_parallelism.py " + " ".join(sys.argv[1:] if argv is None else argv)
    source, _ = corpus(args.corpora, args.ratings)
    lake = OUT / f"parallelism-{args.ratings}" / "lake"
    if not (lake / "ratings").exists():
        subprocess.run([PRIZEFLOW, "ingest", "--source", str(source), "--set",
                        f"lake.root={lake}"], check=True, cwd=PROJECT, stdout=subprocess.DEVNULL)
    runs = []
    for index in range(args.runs):
        for master in ("local[1]", "local[2]"):
            sets = [a for o in args.overrides for a in ("--set", o)]
            out = subprocess.run([sys.executable, __file__, "--child", str(lake), master, *sets],
                                 check=True, cwd=PROJECT, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs.append(result)
            print(f"run {index + 1} {master}: ALS {result['als_seconds']:.1f} s "
                  f"({result['als_blocks']} blocks), neighbourhood "
                  f"{result['neighbourhood_seconds']:.1f} s", flush=True)
    medians = {m: {k: statistics.median(r[k] for r in runs if r["master"] == m)
                   for k in ("als_seconds", "neighbourhood_seconds")}
               for m in ("local[1]", "local[2]")}
    speedup = {k: medians["local[1]"][k] / medians["local[2]"][k]
               for k in ("als_seconds", "neighbourhood_seconds")}
    print(f"\n{'stage':<16} {'local[1] s':>11} {'local[2] s':>11} {'speed-up':>9}")
    for key, name in (("als_seconds", "ALS fit"), ("neighbourhood_seconds", "neighbourhood")):
        print(f"{name:<16} {medians['local[1]'][key]:>11.1f} {medians['local[2]'][key]:>11.1f} "
              f"{speedup[key]:>8.2f}x")
    verdict = all(v >= 1.7 for v in speedup.values())
    print(f"target >= 1.7x on both: {'met' if verdict else 'NOT met'}")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform()}
    OUT.mkdir(exist_ok=True)
    name = "parallelism-with-overrides.json" if args.overrides else "parallelism.json"
    (OUT / name).write_text(json.dumps(
        {"command": command, "overrides": args.overrides, "machine": machine, "runs": runs,
         "medians": medians, "speedup": speedup}, indent=2))
    print(f"command: {command}\nmachine: {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
