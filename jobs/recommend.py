"""spark-submit entry point for `prizeflow recommend` (same arguments; the step is
:func:`prizeflow.pipeline.recommend`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/recommend.py --conf conf/<env>.yaml [--top 10]
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("recommend", argv)


if __name__ == "__main__":
    sys.exit(main())
