"""A short human report of a ``prizeflow run`` summary, for ``make demo``.

    prizeflow run --source demo/corpus | tee demo/run.log
    python -m prizeflow.report demo/run.log [--tracking-uri sqlite:///mlflow.db]

Reads the last line of the log (the JSON summary) and prints ratings ingested, the best
parameters, test RMSE against the baselines, the lift, the registered version and its alias, and
the command that opens the MLflow UI on the same store.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prizeflow.secrets import redact_text


def _parts(train: dict) -> str:
    if train.get("blend_weights") is None:
        return ""
    return (f" (with each user's history; without one {train['test_rmse_without_history']:.4f},"
            f" ALS part alone {train['test_rmse_als']:.4f})")


def _ranks(figures: dict) -> str:
    return (f"precision {figures['precision_at_10']:.4f}, recall {figures['recall_at_10']:.4f}, "
            f"NDCG {figures['ndcg_at_10']:.4f}")


def render(summary: dict, tracking_uri: str) -> str:
    ingest, train = summary["ingest"], summary["train"]
    best = ", ".join(f"{k}={v}" for k, v in train["best_params"].items())
    lines = [
        "prizeflow demo",
        # What the lake holds, then what this run read: a re-run of unchanged files reads none.
        f"  ratings in lake  : {ingest['ratings']:,} (this run read {ingest['files_ingested']} "
        f"file(s), {ingest['lines_read']:,} lines, {ingest['quarantined']:,} quarantined; "
        f"{ingest['files_unchanged']} file(s) unchanged)",
        f"  split            : {train['split_method']} "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(train["split_counts"].items())),
        f"  best params      : {best} (of {train['grid_points']} grid points)",
        f"  test RMSE        : {summary['test_rmse']:.4f}" + _parts(train),
    ]
    for name, rmse in train["baselines"].items():
        lines.append(f"  baseline {name:<8}: RMSE {rmse:.4f}, lift {summary['lift_pct'][name]:+.2f}%")
    for name, why in train.get("baselines_left_out", {}).items():
        lines.append(f"  baseline {name:<8}: no lift shown: {why}")
    ranks = train.get("ranking")
    if ranks:
        lines.append(f"  top-10 quality   : {_ranks(ranks['model'])}; popularity "
                     f"{_ranks(ranks['popularity'])} ({ranks['model']['users']:,} test users)")
    before = summary.get("champion_rmse_before")
    versus = "first version" if before is None else f"champion before: RMSE {before:.4f}"
    lines += [
        f"  registered       : {summary['model_name']} version {summary['version']} "
        + (f"as @{summary['alias']} ({versus})" if summary.get("alias") else
           f"without an alias: not better than its bias baseline ({versus})"),
        f"  MLflow UI        : make ui TRACKING_URI={redact_text(tracking_uri)}  "
        "(then open http://127.0.0.1:5000)",
        "  serve champion   : make serve TRACKING_URI="
        f"{redact_text(tracking_uri)}  (POST http://127.0.0.1:5001/invocations)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a human report of a prizeflow run.")
    parser.add_argument("log", help="file whose last line is the `prizeflow run` JSON summary")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    lines = [l for l in Path(args.log).read_text(encoding="utf-8").splitlines() if l.strip()]
    if not lines:
        parser.error(f"{args.log} is empty")
    summary = json.loads(lines[-1])
    if summary.get("command") != "run":
        parser.error(f"the last line of {args.log} is not a `prizeflow run` summary")
    sys.stdout.write(render(summary, args.tracking_uri) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
