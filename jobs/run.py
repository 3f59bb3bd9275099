"""spark-submit entry point for `prizeflow run` (same arguments); the code is in prizeflow.jobs.run."""

import sys

from prizeflow.jobs.run import main

if __name__ == "__main__":
    sys.exit(main())
