"""Where a Spark application's time goes, stage by stage, from its event log.

    python bench/stage_breakdown.py [--each TEXT] EVENT_LOG [EVENT_LOG ...]

An event log comes from any run with ``--set spark.conf.spark.eventLog.enabled=true --set
spark.conf.spark.eventLog.dir=file:///some/dir --set spark.conf.spark.eventLog.compress=false``
(for example a ``bench/bench_parallelism.py --child`` run); pass the ``events_*`` file inside
the ``eventlog_v2_*`` folder. Stages of the same call site are summed into one row, in the order
they first ran: how many, their wall time, their tasks, and the tasks' summed time on a core
(launch to finish), Spark's executor run time, executor CPU time (JVM threads only: a Python
worker's CPU is not in it), garbage-collection time and shuffle-write time, all in seconds.
Comparing two logs of the same work on ``local[1]`` and ``local[2]`` shows which stages do not
speed up, and whether their tasks wait (run time above CPU time) or work more (CPU time up).
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
from pathlib import Path

COLUMNS = ("busy", "run", "cpu", "gc", "shuffle_write")


def stage_rows(path: Path, each: str | None = None) -> tuple[str, list[dict]]:
    """(master, one row per call site) from one uncompressed event log; the stages of call
    sites containing ``each`` get a row of their own (with their longest task)."""
    stages, tasks, master = {}, collections.defaultdict(list), "?"
    with open(path) as handle:
        for line in handle:
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                stages[info["Stage ID"]] = info
            elif kind == "SparkListenerTaskEnd":
                info, metrics = event["Task Info"], event.get("Task Metrics") or {}
                tasks[event["Stage ID"]].append({
                    "busy": (info["Finish Time"] - info["Launch Time"]) / 1e3,
                    "run": metrics.get("Executor Run Time", 0) / 1e3,
                    "cpu": metrics.get("Executor CPU Time", 0) / 1e9,
                    "gc": metrics.get("JVM GC Time", 0) / 1e3,
                    "shuffle_write": metrics.get("Shuffle Write Metrics", {}).get(
                        "Shuffle Write Time", 0) / 1e9})
            elif kind == "SparkListenerEnvironmentUpdate":
                master = event["Spark Properties"].get("spark.master", "?")
    ordered = sorted(stages.values(), key=lambda s: s["Submission Time"])
    if not ordered:
        return master, []
    start = ordered[0]["Submission Time"]
    rows: dict[str, dict] = {}
    for stage in ordered:
        site = stage["Stage Name"]
        key = site
        if each and each in site:
            longest = max((t["busy"] for t in tasks[stage["Stage ID"]]), default=0.0)
            site = f"stage {stage['Stage ID']}, longest task {longest:.1f} s: {site}"
            key = site
        row = rows.setdefault(key, {"site": site, "first_start": (stage["Submission Time"]
                                                                   - start) / 1e3,
                                     "stages": 0, "wall": 0.0, "tasks": 0,
                                     **{c: 0.0 for c in COLUMNS}})
        row["stages"] += 1
        row["wall"] += (stage["Completion Time"] - stage["Submission Time"]) / 1e3
        row["tasks"] += len(tasks[stage["Stage ID"]])
        for column in COLUMNS:
            row[column] += sum(t[column] for t in tasks[stage["Stage ID"]])
    return master, list(rows.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--each", metavar="TEXT",
                        help="list the stages of call sites containing TEXT one by one")
    parser.add_argument("--min-wall", type=float, default=0.5,
                        help="leave out call sites whose stages took less (seconds)")
    args = parser.parse_args(argv)
    for path in args.logs:
        master, rows = stage_rows(path, args.each)
        print(f"\n{path} ({master})")
        print(f"{'first start s':>13} {'stages':>6} {'wall s':>7} {'tasks':>5} "
              + " ".join(f"{c:>13}" for c in COLUMNS) + "  call site")
        for row in rows:
            if row["wall"] < args.min_wall:
                continue
            print(f"{row['first_start']:>13.1f} {row['stages']:>6} {row['wall']:>7.1f} "
                  f"{row['tasks']:>5} " + " ".join(f"{row[c]:>13.1f}" for c in COLUMNS)
                  + f"  {row['site'][:110 if args.each else 70]}")
    options = f"--each {shlex.quote(args.each)} " if args.each else ""
    print("\ncommand: python bench/stage_breakdown.py " + options
          + " ".join(map(str, args.logs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
