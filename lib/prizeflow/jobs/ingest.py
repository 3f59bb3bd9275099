"""``prizeflow ingest``: raw Netflix Prize or MovieLens files -> Delta tables.

    prizeflow ingest --source PATH [--format auto|netflix|movielens] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/ingest.py --source PATH ...

The work is :func:`prizeflow.ingestion.ingest`: see there for the tables it writes and how every
input line is accounted for. An unknown or empty source fails before Spark starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow import ingestion, lake
from prizeflow.config import Config
from prizeflow.jobs.common import add_source_arguments, make_parser, run_job


def build_parser() -> argparse.ArgumentParser:
    return add_source_arguments(
        make_parser("ingest", "Ingest Netflix Prize or MovieLens files into Delta tables."))


def precheck(config: Config, args: argparse.Namespace) -> None:
    ingestion.check_source(config, args.source, args.format)
    lake.check_writable(config)


def run(spark, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    return ingestion.ingest(spark, config, args.source, args.format)


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", build_parser(), run, argv, precheck=precheck)


if __name__ == "__main__":
    sys.exit(main())
