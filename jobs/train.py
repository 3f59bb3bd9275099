"""spark-submit entry point for `prizeflow train` (same arguments); the code is in prizeflow.jobs.train."""

import sys

from prizeflow.jobs.train import main

if __name__ == "__main__":
    sys.exit(main())
