"""spark-submit entry point for `prizeflow register` (same arguments; the step is
:func:`prizeflow.pipeline.register`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/register.py --conf conf/<env>.yaml [--run-id RUN | --pipeline-run ID]
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("register", argv)


if __name__ == "__main__":
    sys.exit(main())
