"""spark-submit entry point for `prizeflow blend` (same arguments; the step is
:func:`prizeflow.pipeline.blend`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/blend.py --conf conf/<env>.yaml --versions 3,5
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("blend", argv)


if __name__ == "__main__":
    sys.exit(main())
