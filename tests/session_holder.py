"""A driver for tests that look at a running session from outside: builds the SparkSession the way
every job does (``prizeflow.spark.get_spark`` from a YAML config), runs one job so every
driver service is up, writes one JSON object to OUT (the driver's bind settings, its log4j
config file and what that file holds), then holds the session until OUT.release exists.
Files, not stdin/stdout: under spark-submit the Python driver's streams pass through the JVM.

    python tests/session_holder.py CONF OUT            # prizeflow launches the JVM
    spark-submit --master local[2] tests/session_holder.py CONF OUT
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prizeflow.config import load_config
from prizeflow.spark import get_spark

HOLD_SECONDS = 300


def main(argv: list[str]) -> int:
    conf, out = argv[0], Path(argv[1])
    spark = get_spark(load_config(conf))
    spark.range(100).selectExpr("sum(id)").collect()
    settings = spark.sparkContext.getConf()
    log4j = spark.sparkContext._jvm.java.lang.System.getProperty("log4j2.configurationFile")
    summary = {
        "bindAddress": settings.get("spark.driver.bindAddress", None),
        "host": settings.get("spark.driver.host", None),
        "log4j": log4j,
        "log4j_text": Path(log4j.removeprefix("file://")).read_text() if log4j else None,
    }
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(summary))
    os.replace(partial, out)
    release = out.with_name(out.name + ".release")
    deadline = time.monotonic() + HOLD_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
