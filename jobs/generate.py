"""spark-submit entry point for `prizeflow generate` (same arguments; the step is
:func:`prizeflow.pipeline.generate`, its options are in :mod:`prizeflow.steps`).

    prizeflow generate --out DIR --ratings N [--users U --movies M --seed S --layout training_set|combined_data]
"""

import sys

from prizeflow.jobs import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("generate", argv)


if __name__ == "__main__":
    sys.exit(main())
