"""spark-submit entry point for `prizeflow recommend` (same arguments); the code is in prizeflow.jobs.recommend."""

import sys

from prizeflow.jobs.recommend import main

if __name__ == "__main__":
    sys.exit(main())
