"""``prizeflow train``: the Delta ``ratings`` table -> the best model of an ALS grid, in MLflow.

    prizeflow train [--conf conf/local.yaml] [--set data.version=N] [--set train.grid.rank=[8,16]]
    spark-submit --packages io.delta:... jobs/train.py --conf conf/<env>.yaml

The pipeline is :func:`prizeflow.training.train` (split, baselines, ALS grid, neighbourhood
blend, test scores, one MLflow run with the model). Progress goes to stderr; the last stdout
line is the summary.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow.config import Config
from prizeflow.jobs.common import make_parser, run_job


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("train", "Train the ALS grid on the ratings table and track it in MLflow.")
    parser.add_argument("--pipeline-run", default=None, metavar="ID",
                        help="tag the run with a scheduler's run id, for `register "
                             "--pipeline-run ID`")
    return parser


def precheck(config: Config, args: argparse.Namespace) -> None:
    from prizeflow import lake

    lake.check_ingested(config)


def run(spark, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from prizeflow import training

    return training.train(spark, config, pipeline_run=args.pipeline_run).summary()


def main(argv: list[str] | None = None) -> int:
    return run_job("train", build_parser(), run, argv, precheck=precheck, needs_mlflow=True)


if __name__ == "__main__":
    sys.exit(main())
