"""Does one config use the cores it is given? The ALS fit and the neighbourhood stage on
``local[1]`` against ``local[2]``, with the default config (no block or partition counts set).

    .venv/bin/python bench/bench_parallelism.py [--ratings 10000000] [--runs 3] [--repeat 1]
        [--pin | --paired] [--set key=value ...]

A corpus of the Netflix Prize's shape (``prizeflow generate --ratings N --users N*480189/100480507
--movies 17770 --layout combined_data --seed 42``) is ingested once. Then each run is a fresh
process with its own master, alternating local[1] and local[2]: it splits the ratings (hash,
80/10/10), fits the bias baseline, and times (1) one residual ALS fit, rank 20, 10 iterations,
to materialised factors, and (2) the movie similarities of the training residuals
(``neighbours.similarities`` with the default k/shrink/keep/max_user_ratings) collected as the
model holds them. ALS blocks and shuffle partitions come from the session, as in every job.
Each stage also records the CPU seconds of the run's whole process tree (driver, JVM, Python
workers) and the cores it kept busy on average (CPU seconds / wall seconds): an unpinned
``local[1]`` has one task thread, but its JVM's collector and compiler threads and the Python
driver run on the other core. ``--pin`` runs every ``local[1]`` process under ``taskset -c 0``
(one core for the whole tree, a one-core machine) and ``local[2]`` on both cores.
Prints the medians and the local[2] / local[1] speed-ups (target >= 1.7x), writes
bench/out/parallelism.json (parallelism-pinned.json with ``--pin``). JVM CPU is also split by
thread kind (task threads, collector, JIT compiler, other) from /proc. ``--repeat N`` times
each stage N times in a row in each process: the first run pays the JVM's warm-up (its JIT
compiles on the second core under ``local[1]``, beside the tasks under ``local[2]``), the last
finds the code compiled, as the grid's later fits and the blend's second neighbourhood do;
CPU seconds (whole tree, and JVM threads by kind) are kept for the first and the last run, so
the warm-up's own cost is their difference.

``--paired`` measures the machine's ceiling for this very work instead: one pinned ``local[1]``
process alone, then two at once on the two CPUs (nothing shared but the machine); 2 x t(alone) /
t(two at once) is the most any ``local[2]`` can gain here (bench/out/parallelism-paired.json).
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


def stage_times(lake: str, master: str, overrides: list[str], repeat: int = 1) -> dict:
    """In this process: a session on ``master``, then the two timed stages, each ``repeat``
    times in a row (the first run pays the JIT's warm-up, later ones find the code compiled)."""
    from proctree import jvm_threads_cpu, tree, tree_cpu_seconds

    from prizeflow import als, data, grid, neighbours, partitions, splits, training
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
    point = grid.GridPoint("residual", 20, 0.1, 10, 3.0)
    jvm = next(pid for pid in tree(os.getpid())[1:] if _command(pid) == "java")
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    collector = [bean.getName() for bean in management.getGarbageCollectorMXBeans()]

    def timed(work) -> tuple[list[float], list[float], list[dict], object]:
        """Seconds, CPU s of the whole tree and JVM CPU s by thread kind of each of ``repeat``
        runs of ``work``; the last run's result."""
        seconds, cpu, threads = [], [], []
        for _ in range(repeat):
            started, cpu_started = time.monotonic(), tree_cpu_seconds(os.getpid())
            threads_started = jvm_threads_cpu(jvm)
            result = work()
            seconds.append(time.monotonic() - started)
            cpu.append(tree_cpu_seconds(os.getpid()) - cpu_started)
            threads.append(_minus(jvm_threads_cpu(jvm), threads_started))
        return seconds, cpu, threads, result

    def fit_als():
        model = training.fit_point(point, fit_data, settings, 1.0, 5.0)
        model.als.userFactors.count()
        model.als.itemFactors.count()

    conf = config.train.neighbours

    def neighbourhood():
        return len(neighbours.similarities(fit_data.residuals[3.0], conf.shrink,
                                           conf.max_user_ratings, conf.keep, cores,
                                           fit_data.rows).toPandas())

    als_runs, als_cpu, als_threads, _ = timed(fit_als)
    neighbour_runs, neighbour_cpu, neighbour_threads, rows = timed(neighbourhood)
    cache.release()
    spark.stop()
    return {"master": master, "cores": cores, "als_blocks": settings.num_blocks,
            "shuffle_partitions": None, "als_seconds": als_runs[0],
            "neighbourhood_seconds": neighbour_runs[0], "neighbour_rows": rows,
            "als_warm_seconds": als_runs[-1], "neighbourhood_warm_seconds": neighbour_runs[-1],
            "als_runs_seconds": als_runs, "neighbourhood_runs_seconds": neighbour_runs,
            "als_cpu_seconds": als_cpu[0], "neighbourhood_cpu_seconds": neighbour_cpu[0],
            "als_warm_cpu_seconds": als_cpu[-1],
            "neighbourhood_warm_cpu_seconds": neighbour_cpu[-1],
            "als_jvm_threads_cpu": als_threads[0],
            "neighbourhood_jvm_threads_cpu": neighbour_threads[0],
            "als_warm_jvm_threads_cpu": als_threads[-1],
            "neighbourhood_warm_jvm_threads_cpu": neighbour_threads[-1],
            "affinity": sorted(os.sched_getaffinity(0)), "collector": collector,
            "train_ratings": fit_data.rows}


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {kind: round(after[kind] - before[kind], 2) for kind in after}


def _child_command(lake: Path, master: str, overrides: list[str], cpu: int | None,
                   repeat: int = 1) -> list[str]:
    """One timed run in a fresh process; on one CPU (``taskset``) when ``cpu`` is given."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    sets = [a for o in overrides for a in ("--set", o)]
    return [*pin, sys.executable, __file__, "--child", str(lake), master, *sets,
            "--repeat", str(repeat)]


def _child(lake: Path, cpu: int, overrides: list[str], repeat: int) -> subprocess.Popen:
    return subprocess.Popen(_child_command(lake, "local[1]", overrides, cpu, repeat),
                            cwd=PROJECT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench child failed with exit code {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def machine_ceiling(lake: Path, args, command: str) -> int:
    """What two cores give two independent copies of the same work (no shared JVM, no Spark
    scheduling between them): ceiling = 2 x t(alone) / t(two at once). local[2] cannot beat it."""
    keys = ("als_seconds", "neighbourhood_seconds")
    alone, paired = [], []
    for index in range(args.runs):
        alone.append(_result(_child(lake, 0, args.overrides, args.repeat)))
        both = [_child(lake, cpu, args.overrides, args.repeat) for cpu in (0, 1)]
        paired.extend(_result(process) for process in both)
        print(f"run {index + 1}: alone ALS {alone[-1]['als_seconds']:.1f} s, neighbourhood "
              f"{alone[-1]['neighbourhood_seconds']:.1f} s; two at once ALS "
              + ", ".join(f"{r['als_seconds']:.1f}" for r in paired[-2:]) + " s, neighbourhood "
              + ", ".join(f"{r['neighbourhood_seconds']:.1f}" for r in paired[-2:]) + " s",
              flush=True)
    medians = {"alone": {k: statistics.median(r[k] for r in alone) for k in keys},
               "two_at_once": {k: statistics.median(r[k] for r in paired) for k in keys}}
    ceiling = {k: 2 * medians["alone"][k] / medians["two_at_once"][k] for k in keys}
    print(f"\n{'stage':<16} {'alone s':>9} {'two at once s':>14} {'ceiling':>8}")
    for key, name in (("als_seconds", "ALS fit"), ("neighbourhood_seconds", "neighbourhood")):
        print(f"{name:<16} {medians['alone'][key]:>9.1f} {medians['two_at_once'][key]:>14.1f} "
              f"{ceiling[key]:>7.2f}x")
    OUT.mkdir(exist_ok=True)
    (OUT / "parallelism-paired.json").write_text(json.dumps(
        {"command": command, "overrides": args.overrides, "alone": alone, "paired": paired,
         "medians": medians, "ceiling": ceiling}, indent=2))
    print(f"command: {command}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpora", type=Path, default=OUT / "corpora")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="dotted.key=value", help="config override for both masters")
    parser.add_argument("--pin", action="store_true",
                        help="run local[1] under taskset -c 0 (one core for its whole process tree)")
    parser.add_argument("--paired", action="store_true",
                        help="the machine's own ceiling instead: one local[1] process alone on "
                             "CPU 0, then two at once on CPUs 0 and 1")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each stage this many times in a row in each process; the "
                             "last is the warm figure (the JIT has compiled the code)")
    parser.add_argument("--child", nargs=2, metavar=("LAKE", "MASTER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.child:
        print(json.dumps(stage_times(*args.child, args.overrides, args.repeat)))
        return 0
    from bench_scale import PRIZEFLOW, corpus

    command = "python bench/bench_parallelism.py " + " ".join(sys.argv[1:] if argv is None else argv)
    source, _ = corpus(args.corpora, args.ratings)
    lake = OUT / f"parallelism-{args.ratings}" / "lake"
    if not (lake / "ratings").exists():
        subprocess.run([PRIZEFLOW, "ingest", "--source", str(source), "--set",
                        f"lake.root={lake}"], check=True, cwd=PROJECT, stdout=subprocess.DEVNULL)
    if args.paired:
        return machine_ceiling(lake, args, command)
    runs = []
    for index in range(args.runs):
        for master in ("local[1]", "local[2]"):
            cpu = 0 if args.pin and master == "local[1]" else None
            command_line = _child_command(lake, master, args.overrides, cpu, args.repeat)
            out = subprocess.run(command_line, check=True, cwd=PROJECT, capture_output=True,
                                 text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs.append(result)
            print(f"run {index + 1} {master} on CPUs {result['affinity']} "
                  f"({'/'.join(result['collector'])}): "
                  f"ALS {result['als_seconds']:.1f} s ({result['als_blocks']} blocks, "
                  f"{result['als_cpu_seconds'] / result['als_seconds']:.2f} cores busy), "
                  f"neighbourhood {result['neighbourhood_seconds']:.1f} s "
                  f"({result['neighbourhood_cpu_seconds'] / result['neighbourhood_seconds']:.2f}"
                  " cores busy)" + (f"; warm (run {args.repeat} in the process): ALS "
                                    f"{result['als_warm_seconds']:.1f} s, neighbourhood "
                                    f"{result['neighbourhood_warm_seconds']:.1f} s"
                                    if args.repeat > 1 else ""), flush=True)
            print(f"  JVM CPU s by thread kind: ALS {result['als_jvm_threads_cpu']}, "
                  f"neighbourhood {result['neighbourhood_jvm_threads_cpu']}", flush=True)
            if args.repeat > 1:
                print(f"  warm: ALS {result['als_warm_jvm_threads_cpu']}, neighbourhood "
                      f"{result['neighbourhood_warm_jvm_threads_cpu']}", flush=True)
    medians = {m: {k: statistics.median(r[k] for r in runs if r["master"] == m)
                   for k in ("als_seconds", "neighbourhood_seconds", "als_cpu_seconds",
                             "neighbourhood_cpu_seconds", "als_warm_seconds",
                             "neighbourhood_warm_seconds", "als_warm_cpu_seconds",
                             "neighbourhood_warm_cpu_seconds")}
               for m in ("local[1]", "local[2]")}
    stages = [("als_seconds", "ALS fit"), ("neighbourhood_seconds", "neighbourhood")]
    if args.repeat > 1:
        stages += [("als_warm_seconds", "ALS fit, warm"),
                   ("neighbourhood_warm_seconds", "nbhd, warm")]
    speedup = {k: medians["local[1]"][k] / medians["local[2]"][k] for k, _ in stages}
    print(f"\n{'stage':<16} {'local[1] s':>11} {'local[2] s':>11} {'speed-up':>9} "
          f"{'local[1] CPU s':>15} {'local[2] CPU s':>15}")
    for key, name in stages:
        cpu = key.replace("_seconds", "_cpu_seconds")
        cpus = (f"{medians['local[1]'][cpu]:>15.1f} {medians['local[2]'][cpu]:>15.1f}"
                if cpu in medians["local[1]"] else "")
        print(f"{name:<16} {medians['local[1]'][key]:>11.1f} {medians['local[2]'][key]:>11.1f} "
              f"{speedup[key]:>8.2f}x {cpus}")
    for label, keys in (("first run in a fresh process", stages[:2]),
                        ("warm", stages[2:])):
        if keys:
            verdict = all(speedup[k] >= 1.7 for k, _ in keys)
            print(f"target >= 1.7x on both, {label}: {'met' if verdict else 'NOT met'}")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform()}
    OUT.mkdir(exist_ok=True)
    name = "parallelism" + ("-pinned" if args.pin else "") + (
        "-with-overrides" if args.overrides else "") + ".json"
    (OUT / name).write_text(json.dumps(
        {"command": command, "overrides": args.overrides, "pinned": args.pin,
         "machine": machine, "runs": runs,
         "medians": medians, "speedup": speedup}, indent=2))
    print(f"command: {command}\nmachine: {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
