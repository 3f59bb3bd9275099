"""The ``prizeflow`` console script: ``prizeflow <command> [--conf F] [--set k=v ...] [options]``.

The commands and their options are the step table (:mod:`prizeflow.steps`); each runs through
:func:`prizeflow.jobs.main`, as the ``jobs/<command>.py`` spark-submit files do.
"""

from __future__ import annotations

import sys

from prizeflow.steps import STEPS


def usage() -> str:
    lines = ["usage: prizeflow <command> [--conf conf/local.yaml] [--set key=value ...] [options]",
             "", "commands:"]
    lines += [f"  {name:<10} {step.description}" for name, step in STEPS.items()]
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
    if command not in STEPS:
        print(f"prizeflow: error: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    # Imported here: `prizeflow --help` and a mistyped command answer without loading Spark's
    # and MLflow's Python packages.
    from prizeflow.jobs import main as run_job

    return run_job(command, rest)


def entry_point() -> None:
    """The installed ``prizeflow`` command: exits with :func:`main`'s status. A runner that
    calls the entry point as a function (a Databricks wheel task) sees a failure as
    ``SystemExit`` with a non-zero code, not as a returned number it would ignore."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
