"""Sample where a running pipeline's memory is: the Spark JVM, the Python workers, the driver.

    .venv/bin/python bench/memory_split.py --out FILE [--interval 5] [--nmt] [--until-idle 600]

Every ``interval`` seconds it reads /proc and writes one JSON line: the time, the resident memory
(RSS) of the JVMs running Spark (``SparkSubmit``), of the PySpark daemon and workers, and of
every other Python process running ``prizeflow`` (the driver side); the number of Python workers
and the largest one's RSS. With ``--nmt`` it also asks
each JVM ``jcmd PID VM.native_memory summary`` (start the JVM with
``-XX:NativeMemoryTracking=summary``) and records the committed MB per category (Java Heap,
Class, Thread, Code, GC, Internal, Other: direct buffers, Arena, ...). Run it beside
bench/bench_scale.py and read the lines against the stage times of its JSON. It stops after
``--until-idle`` seconds with no Spark JVM, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
NMT_LINE = re.compile(r"^-\s+(?P<name>[A-Za-z ]+?) \(reserved=\d+KB, committed=(?P<kb>\d+)KB")


def _processes():
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{name}/statm") as handle:
                rss = int(handle.read().split()[1]) * PAGE
        except OSError:
            continue  # gone meanwhile
        yield int(name), command, rss


def _kind(command: str) -> str | None:
    if "org.apache.spark.deploy.SparkSubmit" in command:
        return "jvm"
    if "pyspark.daemon" in command or "pyspark.worker" in command:
        return "python_workers"
    if "python" in command and "prizeflow" in command and "memory_split" not in command:
        return "driver_python"
    return None


def _native_memory(pid: int) -> dict[str, float]:
    try:
        text = subprocess.run(["jcmd", str(pid), "VM.native_memory", "summary"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in text.splitlines():
        match = NMT_LINE.match(line.strip())
        if match:
            out[match["name"].strip()] = round(int(match["kb"]) / 1024, 1)
    total = re.search(r"Total: reserved=\d+KB, committed=(\d+)KB", text)
    if total:
        out["Total"] = round(int(total[1]) / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--nmt", action="store_true")
    parser.add_argument("--until-idle", type=float, default=600.0)
    args = parser.parse_args(argv)
    idle_since = time.monotonic()
    with open(args.out, "a") as out:
        while time.monotonic() - idle_since < args.until_idle:
            sample = {"t": time.time(), "jvm": 0, "python_workers": 0, "driver_python": 0,
                      "workers": 0, "largest_worker": 0}
            jvms = []
            for pid, command, rss in _processes():
                kind = _kind(command)
                if kind:
                    sample[kind] += rss
                    if kind == "python_workers":
                        sample["workers"] += 1
                        sample["largest_worker"] = max(sample["largest_worker"], rss)
                    if kind == "jvm":
                        jvms.append(pid)
            if jvms:
                idle_since = time.monotonic()
                if args.nmt:
                    sample["nmt_mb"] = {pid: _native_memory(pid) for pid in jvms}
            out.write(json.dumps(sample) + "\n")
            out.flush()
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
