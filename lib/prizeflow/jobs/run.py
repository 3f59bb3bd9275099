"""``prizeflow run``: the whole pipeline in one command and one Spark session.

    prizeflow run --source PATH [--format auto] [--conf F] [--set k=v]

ingest -> train -> register (:func:`prizeflow.ingestion.ingest`, :func:`prizeflow.training.train`,
:func:`prizeflow.registry.register`). The summary has the register fields at the top level
(model_name, version, alias, test_rmse, lift_pct) and each step's own summary under ``ingest``,
``train`` and ``register``. A failing step stops the run; the error names the step.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow import ingestion, lake
from prizeflow.config import Config
from prizeflow.jobs.common import add_source_arguments, make_parser, run_job, run_step


def build_parser() -> argparse.ArgumentParser:
    return add_source_arguments(make_parser("run", "The whole pipeline: ingest, train, register."))


def pipeline(spark, config: Config, source: str, fmt: str = "auto") -> dict[str, Any]:
    """The three steps in ``spark``; the summary described above."""
    from prizeflow import registry, training

    ingested = run_step("ingest", ingestion.ingest, spark, config, source, fmt)
    trained = run_step("train", lambda: training.train(spark, config).summary())
    registered = run_step("register", registry.register, config, trained["run_id"], spark)
    top = {k: registered[k] for k in ("model_name", "version", "alias", "test_rmse",
                                      "champion_rmse_before", "lift_pct")}
    return {**top, "ingest": ingested, "train": trained, "register": registered}


def precheck(config: Config, args: argparse.Namespace) -> None:
    # A missing or unrecognisable source fails before Spark starts, as in `prizeflow ingest`.
    ingestion.check_source(config, args.source, args.format)
    lake.check_writable(config)


def run(spark, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    return pipeline(spark, config, args.source, args.format)


def main(argv: list[str] | None = None) -> int:
    return run_job("run", build_parser(), run, argv, precheck=precheck,
                   needs_mlflow=True)


if __name__ == "__main__":
    sys.exit(main())
