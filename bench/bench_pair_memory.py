"""Peak memory and time of one neighbourhood block-pair task (prizeflow.neighbours.pair_statistics)
at the size a 100M run gives it, against a reference checkout's, each in a fresh process.

    .venv/bin/python bench/bench_pair_memory.py --reference DIR [--ratings 24000000] [--runs 3]

The ratings are synthetic (fixed seed): 480,189 users, two blocks of 3,554 movies (the Prize's
17,770 movies in 5 blocks, as ``neighbours.block_count`` picks for 97M training ratings),
keep 500, shrink 100. Each run is a new Python process that builds the arrays, then calls the
function; its figure is the process's peak RSS (``ru_maxrss``) less the RSS just before the
call, and the call's wall time. Prints both per run, the medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {lib!r})
import numpy as np
from prizeflow import neighbours
assert neighbours.__file__.startswith({lib!r}), neighbours.__file__
rng = np.random.default_rng(42)
n = {ratings}
user = rng.integers(1, 480_190, n).astype(np.int32)
in_first = rng.random(n) < 0.5
movie = np.where(in_first, rng.integers(0, 3554, n), rng.integers(3554, 7108, n)).astype(np.int32)
residual = rng.normal(0, 1, n).astype(np.float32)
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096
before = rss()
started = time.monotonic()
neighbours.pair_statistics(user, movie, residual, in_first, False, 100.0, 500)
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": seconds, "extra_bytes": peak - before, "before_bytes": before}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--ratings", type=int, default=24_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent / "lib"
    arms = {"this": str(here), "reference": str((args.reference / "lib").resolve())}
    results = {name: [] for name in arms}
    for run in range(args.runs):
        for name, lib in arms.items():
            out = subprocess.run([sys.executable, "-c", CHILD.format(lib=lib, ratings=args.ratings)],
                                 check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            last = results[name][-1]
            print(f"run {run + 1} {name}: {last['seconds']:.1f} s, "
                  f"{last['extra_bytes'] / 1e9:.2f} GB over the inputs", flush=True)
    median = {name: {key: statistics.median(r[key] for r in rows)
                     for key in ("seconds", "extra_bytes")} for name, rows in results.items()}
    print(f"{args.ratings:,} ratings: this {median['this']['extra_bytes'] / 1e9:.2f} GB, "
          f"{median['this']['seconds']:.1f} s; reference "
          f"{median['reference']['extra_bytes'] / 1e9:.2f} GB, "
          f"{median['reference']['seconds']:.1f} s (medians of {args.runs}); ratios "
          f"{median['this']['extra_bytes'] / median['reference']['extra_bytes']:.3f} (memory), "
          f"{median['this']['seconds'] / median['reference']['seconds']:.3f} (time)")
    print("command: .venv/bin/python bench/bench_pair_memory.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
