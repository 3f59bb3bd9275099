"""spark-submit entry point for `prizeflow register` (same arguments); the code is in prizeflow.jobs.register."""

import sys

from prizeflow.jobs.register import main

if __name__ == "__main__":
    sys.exit(main())
