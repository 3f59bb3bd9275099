"""``prizeflow run``: the whole pipeline in one command and one Spark session.

    prizeflow run --source PATH [--format auto] [--conf F] [--set k=v]

ingest -> train -> register. The summary has the register fields at the top level (model_name,
version, alias, test_rmse, lift_pct) and each step's own summary under ``ingest``, ``train`` and
``register``. A failing step stops the run; the error names the step.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from prizeflow.jobs import ingest, register, train
from prizeflow.jobs.common import make_parser, run_job, run_step

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    return ingest.add_source_arguments(
        make_parser("run", "The whole pipeline: ingest, train, register."))


def run(spark, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ingested = run_step("ingest", ingest.run, spark, config,
                     argparse.Namespace(source=args.source, format=args.format))
    trained = run_step("train", train.run, spark, config, argparse.Namespace())
    registered = run_step("register", register.run, spark, config,
                       argparse.Namespace(run_id=trained["run_id"]))
    top = {k: registered[k] for k in ("model_name", "version", "alias", "test_rmse",
                                      "champion_rmse_before", "lift_pct")}
    return {**top, "ingest": ingested, "train": trained, "register": registered}


def main(argv: list[str] | None = None) -> int:
    # A missing or unrecognisable source fails before Spark starts, as in `prizeflow ingest`.
    return run_job("run", build_parser(), run, argv, precheck=ingest.find_source)


if __name__ == "__main__":
    sys.exit(main())
