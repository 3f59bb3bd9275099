"""``prizeflow register``: put a training run's model into the MLflow Model Registry.

    prizeflow register [--run-id RUN | --pipeline-run ID] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/register.py --conf conf/<env>.yaml

Registers the model of the latest finished ``prizeflow train`` run (or ``--run-id``) under
``mlflow.registered_model`` with its test RMSE, lift, data version, params and commit as tags.
The new version takes the ``champion`` alias only if its test RMSE beats the current champion's
on the same test set; when the two runs used different data versions or splits, the champion is
first re-scored on the new run's test set (this needs Spark to read Delta). Otherwise it becomes
``challenger``. The work is :func:`prizeflow.registry.register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow.config import Config
from prizeflow.jobs.common import make_parser, run_job


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("register", "Register a trained model and gate champion vs challenger.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", default=None, help="train run to register (default: latest)")
    which.add_argument("--pipeline-run", default=None, metavar="ID",
                       help="register the latest train run tagged with this pipeline run id "
                            "(what `train --pipeline-run ID` tags; the Airflow DAG passes its "
                            "run id to both)")
    return parser


def run(spark, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    from prizeflow import registry

    return registry.register(config, args.run_id, spark, pipeline_run=args.pipeline_run)


def main(argv: list[str] | None = None) -> int:
    # Spark starts only if the champion must be re-scored on a different test set.
    return run_job("register", build_parser(), run, argv, needs_spark=False,
                   needs_mlflow=True)


if __name__ == "__main__":
    sys.exit(main())
