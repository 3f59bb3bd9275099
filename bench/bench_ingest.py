"""Ingest benchmark: prizeflow's Netflix-format ingest vs the plainest Spark load of the same rows.

    .venv/bin/python bench/bench_ingest.py [--sizes 1000000 10000000] [--runs 3]
        [--layouts combined_data] [--conf conf/full.yaml] [--corpus DIR] [--event-log DIR]

For each size and layout (training_set, combined_data) it generates a corpus (kept under
bench/out/ for reuse), then times, in one Spark session and alternating run by run:
- prizeflow: ``prizeflow ingest`` of the ratings files (header tracking, validation, line
  numbers, duplicate check, quarantine, Delta with constraints, manifest);
- reference: the same ratings as one flat CSV (user,movie,rating,date) read with
  ``spark.read.csv`` and an explicit schema, written to a new Delta table.
Prints medians, the ratio and seconds per million ratings, and writes bench/out/ingest.json.
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


def flat_csv(corpus: Path, target: Path) -> None:
    """The corpus' ratings as one headerless CSV: user,movie,rating,date."""
    if target.exists():
        return
    files = sorted((corpus / "training_set").glob("mv_*.txt")) or sorted(corpus.glob("combined_data_*.txt"))
    tmp = target.with_suffix(".tmp")
    with open(tmp, "w", encoding="ascii") as out:
        for path in files:
            movie = ""
            with open(path, encoding="ascii") as handle:
                for line in handle:
                    if line.endswith(":\n"):
                        movie = line[:-2]
                    else:
                        user, rest = line.split(",", 1)
                        out.write(f"{user},{movie},{rest}")
    tmp.rename(target)


def ratings_only(corpus: Path, target: Path) -> None:
    """A source folder holding only the corpus' ratings files (links), like the reference."""
    if target.exists():
        return
    target.mkdir(parents=True)
    if (corpus / "training_set").is_dir():
        (target / "training_set").symlink_to(corpus / "training_set")
    for path in corpus.glob("combined_data_*.txt"):
        (target / path.name).symlink_to(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--layouts", nargs="+", default=["training_set", "combined_data"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conf", default="conf/local.yaml",
                        help="the Spark settings to run with (conf/full.yaml at 100M)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="an existing corpus of the one size and layout given (for example "
                             "bench/out/corpora/netflix-shape-100480507) instead of generating")
    parser.add_argument("--event-log", type=Path, default=None,
                        help="keep Spark's event log in this folder (bench/event_log.py reads it)")
    args = parser.parse_args(argv)
    if args.corpus and (len(args.sizes) != 1 or len(args.layouts) != 1):
        parser.error("--corpus takes one --sizes value and one --layouts value")
    command = "python bench/bench_ingest.py " + " ".join(sys.argv[1:] if argv is None else argv)

    from prizeflow.config import load_config
    from prizeflow.generate import generate_corpus, make_spec
    from prizeflow import ingestion
    from prizeflow.spark import get_spark

    os.chdir(HERE.parent)
    config = load_config(args.conf)
    config.ingest.follow_external_links = True  # the source folder links into the corpus
    if args.event_log:
        args.event_log.mkdir(parents=True, exist_ok=True)
        config.spark.conf.update({"spark.eventLog.enabled": "true",
                                  "spark.eventLog.dir": args.event_log.resolve().as_uri()})
    spark = get_spark(config)
    schema = "user_id INT, movie_id INT, rating FLOAT, rated_on DATE"
    results = []
    for size in args.sizes:
        for layout in args.layouts:
            corpus = args.corpus.resolve() if args.corpus else OUT / f"corpus-{size}-{layout}"
            if not corpus.exists():
                t0 = time.monotonic()
                generate_corpus(make_spec(corpus, size, seed=42, layout=layout))
                print(f"generated {corpus} in {time.monotonic() - t0:.1f}s", flush=True)
            source = OUT / f"ratings-{size}-{layout}"
            ratings_only(corpus, source)
            csv = OUT / f"flat-{size}.csv"
            flat_csv(corpus, csv)
            ours, reference = [], []
            for run in range(args.runs):
                lake = OUT / "lake"
                shutil.rmtree(lake, ignore_errors=True)
                config.lake.root = str(lake)
                t0 = time.monotonic()
                summary = ingestion.ingest(spark, config, str(source), "netflix")
                ours.append(time.monotonic() - t0)
                assert summary["ratings"] == size and summary["quarantined"] == 0, summary

                target = OUT / "reference"
                shutil.rmtree(target, ignore_errors=True)
                t0 = time.monotonic()
                spark.read.csv(str(csv), schema=schema).write.format("delta").save(str(target))
                reference.append(time.monotonic() - t0)
                print(f"{size:>11,} {layout:<14} run {run + 1}: prizeflow {ours[-1]:7.1f}s  "
                      f"reference {reference[-1]:7.1f}s", flush=True)
            row = {"ratings": size, "layout": layout, "runs": args.runs,
                   "prizeflow_s": round(statistics.median(ours), 2),
                   "reference_s": round(statistics.median(reference), 2)}
            row["ratio"] = round(row["prizeflow_s"] / row["reference_s"], 2)
            row["prizeflow_s_per_million"] = round(row["prizeflow_s"] / size * 1e6, 2)
            results.append(row)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "spark": spark.version, "master": spark.sparkContext.master,
               "platform": platform.platform()}
    OUT.mkdir(exist_ok=True)
    (OUT / "ingest.json").write_text(json.dumps({"command": command, "machine": machine,
                                                 "results": results}, indent=2))
    print(f"\ncommand: {command}\nmachine: {machine}")
    print(f"{'ratings':>11} {'layout':<14} {'prizeflow s':>11} {'reference s':>11} {'ratio':>6} {'s/M':>6}")
    for r in results:
        print(f"{r['ratings']:>11,} {r['layout']:<14} {r['prizeflow_s']:>11} {r['reference_s']:>11} "
              f"{r['ratio']:>6} {r['prizeflow_s_per_million']:>6}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
