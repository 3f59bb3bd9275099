"""The ``prizeflow`` console script: ``prizeflow <command> [--conf F] [--set k=v ...] [options]``.

Each command is a job module under :mod:`prizeflow.jobs` with its own ``main(argv)``; the
``jobs/<command>.py`` files run the same code under spark-submit.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": "Write a synthetic Netflix-Prize-layout corpus.",
    "ingest": "Ingest Netflix Prize or MovieLens files into Delta tables.",
    "train": "Train the ALS grid on the ratings table and track it in MLflow.",
    "register": "Register the latest trained model; gate champion vs challenger.",
    "recommend": "Write top-N recommendations per user from the champion into Delta.",
    "run": "The whole pipeline: ingest, train, register.",
}


def usage() -> str:
    lines = ["usage: prizeflow <command> [--conf conf/local.yaml] [--set key=value ...] [options]",
             "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)  # a mistake, not a request: stdout stays for summaries
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"prizeflow: error: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"prizeflow.jobs.{command}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
