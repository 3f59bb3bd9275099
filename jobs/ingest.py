"""spark-submit entry point for `prizeflow ingest` (same arguments); the code is in prizeflow.jobs.ingest."""

import sys

from prizeflow.jobs.ingest import main

if __name__ == "__main__":
    sys.exit(main())
