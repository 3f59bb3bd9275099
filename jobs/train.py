"""spark-submit entry point for `prizeflow train` (same arguments; the step is
:func:`prizeflow.pipeline.train`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/train.py --conf conf/<env>.yaml [--pipeline-run ID]
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("train", argv)


if __name__ == "__main__":
    sys.exit(main())
