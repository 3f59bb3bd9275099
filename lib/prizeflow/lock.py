"""One ingest at a time per lake (and the file lock that serialises registers on a local MLflow
store: see ``registry``).

Each ingest de-duplicates its rows against the tables it read, so two at once would each miss
the other's rows and both append the same keys. The second one waits for the first
(``ingest.lock_wait_seconds``), then fails naming it. Two mechanisms:

- a lake on local disk: an exclusive ``flock`` on ``<lake.root>/_ingest.lock`` (the kernel drops
  it when its process dies, so a killed ingest never leaves it behind; costs nothing);
- any other lake: a one-row Delta table ``<lake.root>/_ingest_lock``. Taking it is a conditional
  Delta UPDATE (``holder IS NULL``): of two ingests racing for it, Delta's conflict detection
  lets exactly one commit. A holder whose process is gone (same host, dead pid) is replaced; one
  on another host must be cleared by hand (the error says how). Works wherever Delta's commit is
  atomic (HDFS, ADLS, GCS, S3 with a multi-cluster log store). It costs a few Spark jobs (about
  5 s here), which is why local lakes use the file.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pyspark.sql import SparkSession

from prizeflow import lake
from prizeflow.errors import JobError

logger = logging.getLogger(__name__)

LOCK_TABLE = "_ingest_lock"
LOCK_FILE = "_ingest.lock"
POLL_SECONDS = 2.0


class _Conflict(Exception):
    """Another writer committed to the lock table first (Delta's optimistic concurrency)."""


def _conflict_guard(action):
    """Run ``action``; a Delta concurrent-modification failure becomes :class:`_Conflict`.
    On classic Spark, importing ``delta.exceptions`` makes py4j raise delta-spark's conflict
    types (which carry no error condition); Spark Connect raises the server's error with its
    condition, ``DELTA_CONCURRENT_*`` or ``DELTA_*_CHANGED``."""
    import delta.exceptions as delta_conflicts
    from pyspark.errors import PySparkException

    try:
        return action()
    except PySparkException as exc:
        if isinstance(exc, (delta_conflicts.DeltaConcurrentModificationException,
                            delta_conflicts.ConcurrentWriteException,
                            delta_conflicts.MetadataChangedException,
                            delta_conflicts.ProtocolChangedException,
                            delta_conflicts.ConcurrentAppendException,
                            delta_conflicts.ConcurrentDeleteReadException,
                            delta_conflicts.ConcurrentDeleteDeleteException,
                            delta_conflicts.ConcurrentTransactionException)):
            raise _Conflict(type(exc).__name__) from exc
        condition = exc.getCondition() or ""
        if condition.startswith("DELTA_CONCURRENT") or condition in (
                "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED"):
            raise _Conflict(condition) from exc
        raise


def _ensure(spark: SparkSession, path: str) -> None:
    if lake.is_table(spark, path):
        return
    try:
        # The one row is in the table's first commit: two creators cannot make two rows.
        spark.sql(f"CREATE TABLE IF NOT EXISTS {lake.ident(path)} USING delta AS SELECT 1 AS id, "
                  "CAST(NULL AS STRING) AS holder, CAST(NULL AS TIMESTAMP) AS since")
    except Exception:  # noqa: BLE001 - lost the race to create it; fine if it exists now
        if not lake.is_table(spark, path):
            raise


def _holder(spark: SparkSession, path: str) -> str | None:
    row = lake.read(spark, path).select("holder").first()
    return row.holder if row is not None else None


def _dead_local_holder(holder: str) -> bool:
    """True when ``holder`` names a process on this host that no longer runs."""
    try:
        _, host, pid = holder.rsplit(" ", 2)
        pid_number = int(pid.removeprefix("pid="))
    except ValueError:
        return False
    if host != f"host={socket.gethostname()}":
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _set_holder(spark: SparkSession, path: str, condition: str, value: str | None) -> None:
    """One conditional Delta UPDATE of the lock row."""
    since = "current_timestamp()" if value is not None else "CAST(NULL AS TIMESTAMP)"
    _conflict_guard(lambda: lake.update(
        spark, path, {"holder": lake.sql_string(value), "since": since}, condition))


def _try_take(spark: SparkSession, path: str, me: str) -> str | None:
    """None when the lock is now ours; else who holds it."""
    holder = _holder(spark, path)
    if holder is not None and _dead_local_holder(holder):
        logger.warning("taking over the ingest lock of %s: that process is gone", holder)
        condition = f"holder = {lake.sql_string(holder)}"
    elif holder is None:
        condition = "holder IS NULL"
    else:
        return holder
    try:
        _set_holder(spark, path, condition, me)
    except _Conflict:
        logger.debug("the ingest lock changed while taking it; looking again")
    holder = _holder(spark, path)
    return None if holder == me else (holder or "")


def _me(job: str = "ingest") -> str:
    return f"{job}={uuid.uuid4().hex[:12]} host={socket.gethostname()} pid={os.getpid()}"


def _give_up(busy: str, holder: str, wait_seconds: float, setting: str,
             how_to_clear: str) -> JobError:
    return JobError(f"{busy} by another run ({holder}); waited {wait_seconds:g} s ({setting}). "
                    f"{how_to_clear}")


@contextmanager
def ingest_lock(spark: SparkSession, config) -> Iterator[str]:
    """Hold the lake's ingest lock for the duration; yields this holder's name."""
    local = lake.local_root(config)
    wait = config.ingest.lock_wait_seconds
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        with file_lock(local / LOCK_FILE, wait, f"lake {local} is being ingested",
                       "ingest.lock_wait_seconds") as me:
            yield me
    else:
        with delta_lock(spark, config.lake.root, wait) as me:
            yield me


@contextmanager
def file_lock(path: Path, wait_seconds: float, busy: str, setting: str,
              job: str = "ingest") -> Iterator[str]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration, waiting up to
    ``wait_seconds`` for another holder; ``busy`` says what the holder is doing, ``setting``
    names the wait's config key. The file holds the holder's name, for the messages."""
    import fcntl

    me = _me(job)
    deadline = time.monotonic() + wait_seconds
    announced = False
    with open(path, "a+", encoding="utf-8") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another run"
                if time.monotonic() >= deadline:
                    raise _give_up(busy, holder, wait_seconds, setting,
                                   "A dead process holds no flock: this one is alive.") from None
                if not announced:
                    logger.info("%s by %s: waiting for it", busy, holder)
                    announced = True
                time.sleep(POLL_SECONDS / 4)
        handle.seek(0)
        handle.truncate()
        handle.write(me)
        handle.flush()
        try:
            yield me
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def delta_lock(spark: SparkSession, root: str, wait_seconds: float) -> Iterator[str]:
    """The lock for any store Delta commits to atomically: a conditional update of one row."""
    path = lake.table_path(root, LOCK_TABLE)
    me = _me()
    _ensure(spark, path)
    deadline = time.monotonic() + wait_seconds
    announced = None
    while True:
        holder = _try_take(spark, path, me)
        if holder is None:
            break
        if time.monotonic() >= deadline:
            raise _give_up(f"lake {root} is being ingested", holder, wait_seconds,
                           "ingest.lock_wait_seconds", "If that run is dead, clear the lock: "
                           f"UPDATE {lake.ident(path)} SET holder = NULL")
        if holder and holder != announced:
            logger.info("lake %s is being ingested by %s: waiting for it", root, holder)
            announced = holder
        time.sleep(POLL_SECONDS)
    try:
        yield me
    finally:
        _release(spark, path, me)


def _release(spark: SparkSession, path: str, me: str) -> None:
    """Clear the lock if it is still ours. Never raises: the ingest's own outcome (or error)
    is what the caller must see; a lock left behind is named in a warning."""
    for _ in range(10):  # a conflict here is only another run polling: try again
        try:
            _set_holder(spark, path, f"holder = {lake.sql_string(me)}", None)
            return
        except _Conflict:
            time.sleep(0.2)
        except Exception:  # noqa: BLE001 - see the docstring
            logger.warning("could not release the ingest lock %s", path, exc_info=True)
            return
    logger.warning("could not release the ingest lock %s (held by %s): clear it with "
                   "UPDATE %s SET holder = NULL", path, me, lake.ident(path))
