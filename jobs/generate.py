"""spark-submit entry point for `prizeflow generate` (same arguments); the code is in prizeflow.jobs.generate."""

import sys

from prizeflow.jobs.generate import main

if __name__ == "__main__":
    sys.exit(main())
