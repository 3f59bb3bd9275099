"""The whole pipeline at growing sizes of the Netflix Prize's shape: time, CPU and memory per stage.

    .venv/bin/python bench/bench_scale.py --sizes 1000000 10000000 [--conf conf/full.yaml]
    .venv/bin/python bench/bench_scale.py --sizes 100480507 --conf conf/full.yaml   # hours: alone

For each size: a corpus from ``prizeflow generate --ratings N --users N*480189/100480507
--movies 17770 --layout combined_data --seed 42`` (made once, kept under ``--corpora``), then, on a
fresh lake and MLflow store, ``prizeflow run`` (ingest -> train -> register) and ``prizeflow
recommend --top 10`` as separate processes, exactly as a user runs them. bench/proctree.py
samples each whole process tree (JVM and Python workers) every second: CPU time, resident memory
(the sum of RSS, and PSS which counts pages shared by forked workers once) and the disk used on
the scratch filesystem. The stage times come from the jobs' own summaries (each train stage
with its start time); each stage gets the CPU and peak memory of the samples inside it.
The growth exponent of a stage between two sizes is log(t2 / t1) / log(n2 / n1).
Prints the table and the command, and writes bench/out/scale-<sizes>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

import proctree  # noqa: E402  (a sibling script, not a package)

FULL_RATINGS, FULL_USERS, MOVIES = 100_480_507, 480_189, 17_770
PRIZEFLOW = str(PROJECT / ".venv" / "bin" / "prizeflow")


def users_for(ratings: int) -> int:
    return round(ratings * FULL_USERS / FULL_RATINGS)


def corpus(corpora: Path, ratings: int) -> tuple[Path, float | None]:
    """The corpus for ``ratings`` (generated when missing) and the seconds that took."""
    path = corpora / f"netflix-shape-{ratings}"
    if (path / "probe.txt").exists():
        return path, None
    started = time.monotonic()
    subprocess.run([PRIZEFLOW, "generate", "--out", str(path), "--ratings", str(ratings),
                    "--users", str(users_for(ratings)), "--movies", str(MOVIES),
                    "--layout", "combined_data", "--seed", "42"], check=True,
                   stdout=subprocess.DEVNULL)
    return path, time.monotonic() - started


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON summary in the output")


def run_step(command: list[str], log: Path, disk_path: Path) -> dict:
    with open(log, "w") as err:
        result = proctree.run_monitored(command, interval=1.0, stdout=subprocess.PIPE,
                                        stderr=err, cwd=PROJECT, disk_path=str(disk_path))
    if result["returncode"] != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(command[:2])} failed ({result['returncode']}): {tail}")
    result["summary"] = _last_json(result.pop("stdout"))
    return result


def stage_rows(run: dict, recommend: dict) -> list[dict]:
    """(stage, started, seconds) of the whole pipeline, in order, with CPU and memory."""
    summary = run["summary"]
    stages = [("ingest", summary["ingest"]["started"], summary["ingest"]["seconds"])]
    for stage in summary["train"]["stages"]:
        name = stage["stage"]
        stages.append((name, stage["started"], stage["seconds"]))
    stages.append(("register", summary["register"]["started"], summary["register"]["seconds"]))
    rows = []
    for name, started, seconds in stages:
        rows.append({"stage": name, "seconds": seconds,
                     **proctree.window(run["samples"], started, started + seconds)})
    rec = recommend["summary"]
    rows.append({"stage": "recommend (whole process)", "seconds": recommend["wall_seconds"],
                 "cpu_seconds": recommend["cpu_seconds"],
                 "peak_rss_bytes": recommend["peak_rss_bytes"],
                 "peak_pss_bytes": recommend["peak_pss_bytes"], "rows": rec["rows"],
                 "users": rec["users"]})
    return rows


def measure(size: int, corpora: Path, conf: str, keep: bool, event_log: bool = False) -> dict:
    source, generated = corpus(corpora, size)
    work = OUT / f"scale-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common = ["--conf", conf, "--set", f"lake.root={work / 'lake'}",
              "--set", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
              "--set", f"spark.conf.spark.local.dir={work / 'spark-local'}"]
    if event_log:
        # Spark's own record of every stage and task (spills, GC, shuffle), for reading after.
        (work / "events").mkdir()
        common += ["--set", "spark.conf.spark.eventLog.enabled=true",
                   "--set", f"spark.conf.spark.eventLog.dir=file://{work / 'events'}"]
    disk_before = proctree.disk_used(str(work))
    started = time.time()
    run = run_step([PRIZEFLOW, "run", "--source", str(source), *common], work / "run.log", work)
    recommend = run_step([PRIZEFLOW, "recommend", "--top", "10", *common], work / "recommend.log",
                         work)
    summary = run["summary"]
    train = summary["train"]
    result = {
        "ratings": size, "users": users_for(size), "corpus": str(source),
        "generate_seconds": generated, "started": started,
        "run": {k: run[k] for k in ("wall_seconds", "cpu_seconds", "peak_rss_bytes",
                                    "peak_pss_bytes", "peak_disk_bytes")},
        "recommend": {k: recommend[k] for k in ("wall_seconds", "cpu_seconds", "peak_rss_bytes",
                                                "peak_pss_bytes", "peak_disk_bytes")},
        "scratch_peak_bytes": max(run["peak_disk_bytes"], recommend["peak_disk_bytes"])
        - disk_before,
        "lake_bytes": sum(f.stat().st_size for f in (work / "lake").rglob("*") if f.is_file()),
        "stages": stage_rows(run, recommend),
        "test_rmse": summary["test_rmse"], "lift_pct": summary["lift_pct"],
        "test_rmse_without_history": train["test_rmse_without_history"],
        "test_rmse_als": train["test_rmse_als"], "baselines": train["baselines"],
        "best_params": train["best_params"], "model_bytes": train["model_bytes"],
        "split_counts": train["split_counts"], "registered": summary["alias"],
        "recommendations": recommend["summary"]["rows"],
        "recommended_users": recommend["summary"]["users"],
    }
    if not keep:
        shutil.rmtree(work / "lake", ignore_errors=True)
        shutil.rmtree(work / "spark-local", ignore_errors=True)
    return result


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def print_table(results: list[dict]) -> None:
    for result in results:
        print(f"\n{result['ratings']:,} ratings ({result['users']:,} users, {MOVIES:,} movies): "
              f"run {result['run']['wall_seconds']:.0f} s + recommend "
              f"{result['recommend']['wall_seconds']:.0f} s; peak RSS "
              f"{_gb(max(result['run']['peak_rss_bytes'], result['recommend']['peak_rss_bytes']))}"
              f" GB, scratch {_gb(result['scratch_peak_bytes'])} GB; test RMSE "
              f"{result['test_rmse']:.4f} (without history {result['test_rmse_without_history']:.4f},"
              f" ALS part {result['test_rmse_als']:.4f}); lift {result['lift_pct']}; model "
              f"{result['model_bytes'] / 1e6:.1f} MB")
        print(f"  {'stage':<48} {'wall s':>8} {'CPU s':>8} {'peak RSS GB':>11} {'peak PSS GB':>11}")
        for row in result["stages"]:
            print(f"  {row['stage'][:48]:<48} {row['seconds']:>8.1f} {row['cpu_seconds']:>8.1f} "
                  f"{_gb(row['peak_rss_bytes']):>11} {_gb(row['peak_pss_bytes']):>11}")
    if len(results) < 2:
        return
    print("\ngrowth exponents (log t2/t1 / log n2/n1) of each stage's wall time:")
    names = [row["stage"] for row in results[-1]["stages"]]
    for name in names:
        values = []
        for a, b in zip(results, results[1:]):
            ta = next((r["seconds"] for r in a["stages"] if r["stage"] == name), None)
            tb = next((r["seconds"] for r in b["stages"] if r["stage"] == name), None)
            if ta and tb:
                values.append(f"{math.log(tb / ta) / math.log(b['ratings'] / a['ratings']):.2f}")
            else:
                values.append("-")
        print(f"  {name[:48]:<48} " + "  ".join(values))


def growth(results: list[dict]) -> dict:
    out: dict[str, list] = {}
    for a, b in zip(results, results[1:]):
        for row in b["stages"]:
            prior = next((r for r in a["stages"] if r["stage"] == row["stage"]), None)
            if prior and prior["seconds"] > 0 and row["seconds"] > 0:
                exponent = math.log(row["seconds"] / prior["seconds"]) / math.log(
                    b["ratings"] / a["ratings"])
                out.setdefault(row["stage"], []).append(round(exponent, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--corpora", type=Path, default=OUT / "corpora")
    parser.add_argument("--keep", action="store_true", help="keep each size's lake")
    parser.add_argument("--event-log", action="store_true",
                        help="write Spark's event log under bench/out/scale-<size>/events")
    args = parser.parse_args(argv)
    command = "python bench/bench_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = []
    for size in args.sizes:
        results.append(measure(size, args.corpora, args.conf, args.keep, args.event_log))
        print_table(results[-1:])
        sys.stdout.flush()
    print_table(results)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "platform": platform.platform(),
               "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT,
                            capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%d", time.gmtime())
    OUT.mkdir(exist_ok=True)
    name = "scale-" + "-".join(str(s) for s in args.sizes) + ".json"
    (OUT / name).write_text(json.dumps({"command": command, "commit": commit, "date": date,
                                        "conf": args.conf, "machine": machine,
                                        "results": results, "growth": growth(results)}, indent=2))
    print(f"\ncommand: {command}\ncommit: {commit} ({date})\nmachine: {machine}\n"
          f"written: bench/out/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
