"""spark-submit entry point for `prizeflow predict` (same arguments; the step is
:func:`prizeflow.pipeline.predict`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/predict.py --conf conf/<env>.yaml --qualifying \\
        --out predictions.txt
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("predict", argv)


if __name__ == "__main__":
    sys.exit(main())
