"""The stderr of a driver JVM that prizeflow launches, passed on without the lines nobody can act on.

Three lines reach the terminal outside any logger, so no log4j config can filter them:

- ``WARNING: Using incubator modules: jdk.incubator.vector``: the JVM itself, at start, because
  Spark adds that module for its vectorised BLAS;
- ``netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed: libblas.so.3: cannot open shared
  object file: No such file or directory`` and its ``netlib-lapack`` twin: MLlib's native
  BLAS loader (C code) at the first ALS fit on a machine without a system BLAS; MLlib then runs
  its Java BLAS, as it says in its own log at DEBUG.

So the JVM's stderr goes to a pipe, and a daemon thread passes every other byte on to this
process's stderr (file descriptor 2, where the JVM would have written), line by line and in
order, secrets masked (:mod:`prizeflow.secrets`), after wiping a progress bar on the terminal
as a log line does; the known lines go to this module's logger at DEBUG (``-v`` shows them). The thread reads from before the JVM starts
until the JVM and the Python workers it starts have all closed the pipe, so the JVM never waits
on a full pipe. Under ``spark-submit`` (and on Databricks) the JVM is not prizeflow's to launch
and its stderr is left as it is (Spark's own ``spark.redaction.regex``, which prizeflow extends,
still applies to what Spark logs of its settings).
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
from typing import Callable

from prizeflow import progress
from prizeflow.secrets import redact_text

logger = logging.getLogger(__name__)

KNOWN_LINES = (
    re.compile(rb"WARNING: Using incubator modules: jdk\.incubator\.vector\s*"),
    re.compile(rb"netlib-(blas|lapack|arpack): JNI_OnLoad: dlopen\([^)]*\) failed(: .*)?\s*"),
)
# A line longer than this is passed on before its end arrives (nothing known is that long).
LONGEST_HELD_LINE = 1 << 16


def is_known(line: bytes) -> bool:
    return any(pattern.fullmatch(line) for pattern in KNOWN_LINES)


def launch_gateway(conf):
    """PySpark's own ``launch_gateway`` for ``conf``, with the JVM's stderr filtered."""
    from pyspark.java_gateway import launch_gateway as pyspark_launch

    read_end, write_end = os.pipe()
    threading.Thread(target=pass_on, args=(read_end, 2, progress.make_way),
                     name="prizeflow-jvm-stderr", daemon=True).start()
    try:
        return pyspark_launch(conf, popen_kwargs={"stderr": write_end})
    finally:
        os.close(write_end)  # the JVM holds its own copy; EOF comes when the JVM's side closes


def pass_on(source: int, target: int, before_write: Callable[[], None] | None = None) -> None:
    """Copy ``source`` to ``target`` until end of file, without the known lines;
    ``before_write`` is called before each write (a progress bar makes way for the lines)."""
    held = b""
    writable = True
    while chunk := os.read(source, 1 << 16):
        *lines, held = (held + chunk).split(b"\n")
        kept = []
        for line in lines:
            if is_known(line):
                logger.debug("JVM: %s", line.decode(errors="replace"))
            else:
                kept.append(_redacted(line) + b"\n")
        if len(held) > LONGEST_HELD_LINE:
            kept.append(_redacted(held))
            held = b""
        if kept and writable:
            _make_way(before_write)
            writable = _write_all(target, b"".join(kept))
    if held and writable:
        _write_all(target, _redacted(held))
    os.close(source)


def _redacted(line: bytes) -> bytes:
    """``line`` with secrets masked (:mod:`prizeflow.secrets`); bytes that are not UTF-8 pass
    through as they are."""
    text = line.decode("utf-8", errors="surrogateescape")
    return redact_text(text).encode("utf-8", errors="surrogateescape")


def _make_way(before_write: Callable[[], None] | None) -> None:
    if before_write is None:
        return
    try:
        before_write()
    except Exception:  # noqa: BLE001 - a bar that cannot be wiped must not stop the copying
        pass


def _write_all(target: int, data: bytes) -> bool:
    """False once ``target`` is gone (closed, or its reader is); the caller goes on reading, so
    that the JVM never blocks on its stderr. A full non-blocking ``target`` is waited for."""
    while data:
        try:
            data = data[os.write(target, data):]
        except BlockingIOError:
            select.select([], [target], [], 1.0)
        except OSError:
            return False
    return True
