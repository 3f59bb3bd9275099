"""`prizeflow recommend` as a whole process, this checkout against a reference one, on a kept lake.

    .venv/bin/python bench/bench_recommend.py --work bench/out/scale-100480507 \
        --reference /tmp/old --conf conf/full.yaml --runs 3 [--top 10]

``--work`` is a folder ``bench/bench_scale.py --keep`` left (``lake/`` and ``mlflow.db``: a lake
and a registered ``@champion``). ``--reference`` is another checkout of prizeflow (for example a
clone at an older commit) whose ``lib`` is put first on ``PYTHONPATH``; both use this
checkout's virtualenv, config and command line. The two run alternately, ``--runs`` times each
(A first), each sampled by bench/proctree.py (wall, CPU, peak RSS of the process tree). Each run
overwrites the Delta table ``recommendations``; afterwards one Spark session compares the
table versions the last run of each side wrote, row for row (user, rank, movie, predicted
rating to 1e-9). Prints medians, the ratio, the comparison and the command, and writes
bench/out/recommend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
OUT = HERE / "out"
PRIZEFLOW = str(PROJECT / ".venv" / "bin" / "prizeflow")
sys.path.insert(0, str(HERE))

import proctree  # noqa: E402  (a sibling script, not a package)


def _common(work: Path, conf: str) -> list[str]:
    return ["--conf", conf, "--set", f"lake.root={work / 'lake'}",
            "--set", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
            "--set", f"spark.conf.spark.local.dir={work / 'spark-local'}"]


def run_once(work: Path, conf: str, top: int, pythonpath: str | None, log: Path) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [PRIZEFLOW, "recommend", "--top", str(top), *_common(work, conf)]
    with open(log, "w") as err:
        result = proctree.run_monitored(command, interval=1.0, env=env, stdout=subprocess.PIPE,
                                        stderr=err, cwd=PROJECT)
    if result["returncode"] != 0:
        raise SystemExit(f"recommend failed ({result['returncode']}), see {log}")
    summary = json.loads(result.pop("stdout").strip().splitlines()[-1])
    return {"wall_seconds": result["wall_seconds"], "cpu_seconds": result["cpu_seconds"],
            "peak_rss_bytes": result["peak_rss_bytes"],
            "delta_version": summary["delta_version"], "rows": summary["rows"],
            "users": summary["users"]}


def compare(work: Path, conf: str, version_a: int, version_b: int) -> dict:
    """Rows of one table version that the other lacks (predicted ratings to 1e-9)."""
    from pyspark.sql import functions as F

    from prizeflow.config import load_config
    from prizeflow.spark import get_spark

    config = load_config(conf, [f"lake.root={work / 'lake'}"])
    spark = get_spark(config)
    path = str(work / "lake" / "recommendations")

    def rows(version: int):
        return (spark.read.format("delta").option("versionAsOf", version).load(path)
                .select("user_id", "rank", "movie_id",
                        F.round("predicted_rating", 9).alias("predicted_rating")))

    a, b = rows(version_a), rows(version_b)
    result = {"rows_a": a.count(), "rows_b": b.count(),
              "only_in_a": a.exceptAll(b).count(), "only_in_b": b.exceptAll(a).count()}
    spark.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--conf", default="conf/full.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    command = "python bench/bench_recommend.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = args.work.resolve()
    sides = {"A": None, "B": str(args.reference.resolve() / "lib")}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for index in range(args.runs):
        for side, pythonpath in sides.items():
            run = run_once(work, args.conf, args.top, pythonpath,
                           work / f"recommend-{side}-{index}.log")
            runs[side].append(run)
            print(f"run {index + 1} {side}: {run['wall_seconds']:.1f} s wall, "
                  f"{run['cpu_seconds']:.0f} s CPU, peak RSS {run['peak_rss_bytes'] / 1e9:.2f} GB, "
                  f"{run['rows']:,} rows for {run['users']:,} users", flush=True)
    medians = {side: {key: statistics.median(r[key] for r in runs[side])
                      for key in ("wall_seconds", "cpu_seconds", "peak_rss_bytes")}
               for side in runs}
    ratios = [a["wall_seconds"] / b["wall_seconds"] for a, b in zip(runs["A"], runs["B"])]
    same = compare(work, args.conf, runs["A"][-1]["delta_version"],
                   runs["B"][-1]["delta_version"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT,
                            capture_output=True, text=True).stdout.strip()
    reference = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.reference,
                               capture_output=True, text=True).stdout.strip()
    for side, name in (("A", f"this checkout ({commit})"), ("B", f"reference ({reference})")):
        m = medians[side]
        print(f"{side} {name}: median {m['wall_seconds']:.1f} s wall, {m['cpu_seconds']:.0f} s "
              f"CPU, peak RSS {m['peak_rss_bytes'] / 1e9:.2f} GB")
    print(f"A/B wall (median of the per-pair ratios): {statistics.median(ratios):.3f}")
    print(f"output: {same}")
    OUT.mkdir(exist_ok=True)
    (OUT / "recommend.json").write_text(json.dumps(
        {"command": command, "commit": commit, "reference": reference, "runs": runs,
         "medians": medians, "ratio_wall": statistics.median(ratios), "output": same},
        indent=2))
    print(f"\ncommand: {command}\nwritten: bench/out/recommend.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
