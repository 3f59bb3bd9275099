"""What issue 29's checks cost, without Spark: redaction of log lines, and verifying a model's
files before it loads.

    .venv/bin/python bench/bench_integrity.py [--runs 5] [--lines 200000]

redaction: ``prizeflow.secrets.redact_text`` over a mix of log lines shaped like the driver's
  (Spark INFO lines, prizeflow's own, a quarter with a URI, a few with credentials), against the
  two-pattern policy it replaced (URI userinfo without ``/`` or ``@``, five query names: the
  reference, in this file), same lines, alternating, median of ``--runs``.
model: a model folder shaped like the full corpus's champion (480,189 users and 17,770 movies at
  rank 20, neighbourhood tables of 17,770 x 50, compressed as ``train`` saves it, plus the
  package code): copying it (what MLflow's download of a local artifact does before any load)
  against copying it and computing its digest (what every verified load does), median of
  ``--runs``.
Prints its figures and the command, and writes bench/out/integrity.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prizeflow import model_integrity
from prizeflow.secrets import redact_text

PROJECT = Path(__file__).resolve().parents[1]

# The policy before issue 29, kept here as the reference.
_OLD_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_OLD_QUERY = re.compile(r"(?P<name>[?&;](?:sig|token|access_token|secret|password|"
                        r"x-amz-signature|x-amz-security-token)=)(?P<value>[^&;\s'\"]+)",
                        re.IGNORECASE)


def old_redact(text: str) -> str:
    text = _OLD_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _OLD_QUERY.sub(lambda m: f"{m.group('name')}***", text)


def log_lines(count: int) -> list[str]:
    shapes = [
        "26/12/06 07:47:38 INFO BlockManagerMaster: Registered BlockManager BlockManagerId(driver, "
        "127.0.0.1, {i}, None)",
        "2026-12-06 07:47:38,123 INFO prizeflow.ingestion: ingest: 17770 files, {i} lines, 0 "
        "quarantined, duplicates 0",
        "26/12/06 07:47:39 INFO DAGScheduler: Job {i} finished: collect at ingestion.py:231, took "
        "0.123456 s",
        "2026-12-06 07:47:40,001 INFO prizeflow.tracking: MLflow tracking server "
        "https://mlflow.example.com/api/2.0 answered in 0.{i} s",
        "26/12/06 07:47:41 INFO FileSourceScanExec: reading s3a://bucket/lake/ratings/part-{i}."
        "snappy.parquet?X-Amz-Date=20261206&X-Amz-Signature=abcdef{i}",
        "2026-12-06 07:47:42,777 WARNING prizeflow.spark: spark.remote sc://h:443/;token=t{i};"
        "user_id=me",
        "26/12/06 07:47:43 INFO SparkContext: Added JAR file:/root/.ivy2/jars/delta-{i}.jar",
        "2026-12-06 07:47:44,555 INFO prizeflow.registry: registered prizeflow-als v{i} as "
        "champion (test RMSE 0.8561 vs champion none)",
    ]
    return [shapes[i % len(shapes)].format(i=i) for i in range(count)]


def time_redaction(function, lines: list[str]) -> float:
    started = time.perf_counter()
    for line in lines:
        function(line)
    return time.perf_counter() - started


def model_folder(root: Path) -> Path:
    """A model folder shaped like the full corpus's champion."""
    rng = np.random.default_rng(29)
    users, movies, rank, k = 480_189, 17_770, 20, 50
    folder = root / "model"
    (folder / "artifacts").mkdir(parents=True)
    np.savez_compressed(
        folder / "artifacts" / "factors.npz", kind=np.array("residual"),
        scalars=np.array([3.6, 1.0, 5.0]), user_ids=np.arange(users, dtype=np.int64),
        user_bias=rng.normal(size=users), user_factors=rng.normal(size=(users, rank)).astype(np.float32),
        user_has_factors=np.ones(users, bool), movie_ids=np.arange(movies, dtype=np.int64),
        movie_bias=rng.normal(size=movies),
        movie_factors=rng.normal(size=(movies, rank)).astype(np.float32),
        movie_has_factors=np.ones(movies, bool),
        nb_neighbours=rng.integers(0, movies, size=(movies, k)).astype(np.int32),
        nb_similarities=rng.random(size=(movies, k)).astype(np.float32))
    shutil.copytree(PROJECT / "lib" / "prizeflow", folder / "code" / "prizeflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


def time_model(folder: Path, verify: bool) -> float:
    with tempfile.TemporaryDirectory() as into:
        started = time.perf_counter()
        copy = shutil.copytree(folder, Path(into) / "copy")
        if verify:
            model_integrity.folder_digest(copy)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args(argv)
    lines = log_lines(args.lines)
    old, new = [], []
    for _ in range(args.runs):
        old.append(time_redaction(old_redact, lines))
        new.append(time_redaction(redact_text, lines))
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        copy, verified = [], []
        for _ in range(args.runs):
            copy.append(time_model(folder, verify=False))
            verified.append(time_model(folder, verify=True))
    result = {
        "command": "bench/bench_integrity.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "runs": args.runs, "lines": args.lines,
        "redaction_old_s": statistics.median(old), "redaction_new_s": statistics.median(new),
        "redaction_us_per_line": 1e6 * statistics.median(new) / args.lines,
        "redaction_ratio": statistics.median(new) / statistics.median(old),
        "model_mb": size / 1e6, "model_copy_s": statistics.median(copy),
        "model_copy_and_verify_s": statistics.median(verified),
        "model_ratio": statistics.median(verified) / statistics.median(copy),
    }
    out = PROJECT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "integrity.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
