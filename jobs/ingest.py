"""spark-submit entry point for `prizeflow ingest` (same arguments; the step is
:func:`prizeflow.pipeline.ingest`, its options are in :mod:`prizeflow.steps`).

    spark-submit --packages io.delta:... jobs/ingest.py --source PATH [--format auto] --conf conf/<env>.yaml
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", argv)


if __name__ == "__main__":
    sys.exit(main())
