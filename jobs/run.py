"""spark-submit entry point for `prizeflow run` (same arguments; the step is
:func:`prizeflow.pipeline.run`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/run.py --source PATH --conf conf/<env>.yaml
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("run", argv)


if __name__ == "__main__":
    sys.exit(main())
