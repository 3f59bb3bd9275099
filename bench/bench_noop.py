"""No-op ingest benchmark: `prizeflow ingest` of an unchanged corpus, as a whole process.

    .venv/bin/python bench/bench_noop.py [--ratings 200000] [--runs 5]

Generates the demo corpus (`make demo`'s: combined_data layout, seed 7) under bench/out/ unless
it is there, ingests it once into a fresh lake, then times whole `prizeflow ingest` processes
with nothing new, alternating run by run:
- without Spark: the change check against the record the last ingest left beside the tables
  (prizeflow.unchanged);
- with Spark (the reference, what every no-op ingest did before): the same command with the
  record removed first, so the change check starts the JVM and reads the Delta manifest.
Prints each run, the medians and their ratio, and writes bench/out/noop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
OUT = HERE / "out"
BIN = Path(sys.executable).parent
RECORD = "_prizeflow_ingest.json"


def _run(args: list[str]) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run([str(BIN / "prizeflow"), *args], cwd=PROJECT, capture_output=True,
                          text=True, timeout=900)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"prizeflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    corpus = OUT / f"noop-corpus-{args.ratings}"
    if not corpus.is_dir():
        _run(["generate", "--out", str(corpus), "--ratings", str(args.ratings), "--seed", "7",
              "--layout", "combined_data"])
    lake = OUT / "noop-lake"
    shutil.rmtree(lake, ignore_errors=True)
    ingest = ["ingest", "--source", str(corpus), "--set", f"lake.root={lake}", "-q"]
    first_seconds, first = _run(ingest)
    print(f"first ingest: {first_seconds:.1f} s, {first['ratings']:,} ratings", flush=True)
    fast, reference = [], []
    for run in range(args.runs):
        (lake / RECORD).unlink(missing_ok=True)
        seconds, summary = _run(ingest)
        assert summary["nothing_ingested"] and (lake / RECORD).is_file()
        reference.append(seconds)
        seconds, again = _run(ingest)
        assert again["nothing_ingested"] and again["ratings"] == summary["ratings"]
        fast.append(seconds)
        print(f"run {run + 1}: without Spark {fast[-1]:.2f} s, with Spark {reference[-1]:.2f} s",
              flush=True)
    medians = {"without_spark": statistics.median(fast), "with_spark": statistics.median(reference)}
    command = f".venv/bin/python bench/bench_noop.py --ratings {args.ratings} --runs {args.runs}"
    print(f"median no-op ingest as a process: without Spark {medians['without_spark']:.2f} s, "
          f"with Spark {medians['with_spark']:.2f} s "
          f"(ratio {medians['without_spark'] / medians['with_spark']:.2f})\ncommand: {command}")
    OUT.mkdir(exist_ok=True)
    (OUT / "noop.json").write_text(json.dumps({
        "command": command, "ratings": first["ratings"], "files": first["files_ingested"],
        "first_ingest_seconds": first_seconds, "without_spark": fast, "with_spark": reference,
        "medians": medians, "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                        "platform": platform.platform()}}, indent=2))


if __name__ == "__main__":
    main()
