"""``prizeflow generate``: write a synthetic corpus in the Netflix Prize layout.

    prizeflow generate --out DIR --ratings N [--users U --movies M --seed S
                       --layout training_set|combined_data]

Needs no Spark; see :mod:`prizeflow.generate` for what the corpus looks like.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prizeflow.config import Config
from prizeflow.generate import LAYOUTS, generate_corpus, make_spec
from prizeflow.jobs.common import make_parser, run_job


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("generate", "Write a synthetic Netflix-Prize-layout ratings corpus.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ratings", required=True, type=int, help="number of ratings")
    parser.add_argument("--users", type=int, default=None, help="users (default: scaled like Netflix)")
    parser.add_argument("--movies", type=int, default=None, help="movies (default: scaled like Netflix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=LAYOUTS, default="training_set")
    return parser


def run(spark: Any, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    spec = make_spec(args.out, args.ratings, args.users, args.movies, args.seed, args.layout)
    return generate_corpus(spec)


def main(argv: list[str] | None = None) -> int:
    return run_job("generate", build_parser(), run, argv, needs_spark=False)


if __name__ == "__main__":
    sys.exit(main())
