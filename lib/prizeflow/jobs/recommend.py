"""``prizeflow recommend``: top-N movies per user from the registered champion, into Delta.

    prizeflow recommend [--top 10] [--alias champion] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/recommend.py --top 10 --conf conf/<env>.yaml

Writes the Delta table ``recommendations`` (user_id, rank, movie_id, predicted_rating,
model_version, created_at); the work is :func:`prizeflow.recommending.recommend`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow import lake, recommending
from prizeflow.config import Config
from prizeflow.jobs.common import make_parser, run_job


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("recommend", "Write top-N recommendations per user from the champion.")
    parser.add_argument("--top", type=int, default=10, help="movies per user (default 10)")
    parser.add_argument("--alias", default="champion", help="registered model alias to use")
    return parser


def precheck(config: Config, args: argparse.Namespace) -> None:
    recommending.check_top(args.top)
    lake.check_ingested(config)


def run(spark, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    return recommending.recommend(spark, config, args.top, args.alias)


def main(argv: list[str] | None = None) -> int:
    return run_job("recommend", build_parser(), run, argv, precheck=precheck,
                   needs_mlflow=True)


if __name__ == "__main__":
    sys.exit(main())
