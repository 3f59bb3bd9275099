"""One ingest at a time per lake (and the file lock that serialises registers on a local MLflow
store: see ``registry``).

Each ingest de-duplicates its rows against the tables it read, so two at once would each miss
the other's rows and both append the same keys. The second one waits for the first
(``ingest.lock_wait_seconds``), then fails naming it. The lake's filesystem picks the lock, never
the way the job was started (CLI, spark-submit, a notebook), so every ingest into one lake takes
the same one:

- a lake on this machine's disk (Hadoop resolves its path to the local filesystem): an exclusive
  ``flock`` on ``<lake>/_ingest.lock`` (the kernel drops it when its process dies, so a killed
  ingest never leaves it behind; costs nothing);
- any other lake (object stores, HDFS, DBFS; and every lake over Spark Connect, whose paths name
  the server's filesystems): a one-row Delta table ``<lake.root>/_ingest_lock`` holding the
  holder's token and a lease. Taking it is a conditional Delta UPDATE (free, or its lease run
  out): of two ingests racing for it, Delta's conflict detection lets exactly one commit. The
  holder renews the lease from a background thread (every third of
  ``ingest.lock_lease_seconds``), so a live ingest is never taken over, and a dead one blocks
  others for one lease at most. An ingest that could not renew in time (its lease may have been
  taken) stops before its next commit and before publishing. Works wherever Delta's commit is
  atomic (HDFS, ADLS, GCS, S3 with a multi-cluster log store); leases compare the drivers'
  clocks, so keep them within a fraction of the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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


class Held:
    """A lock this run holds: ``name`` for messages, :meth:`check` before each commit."""

    def __init__(self, name: str, lake_root: str = "") -> None:
        self.name = name
        self.lake_root = lake_root
        self._lost: str | None = None
        self._valid_until: float | None = None  # monotonic; None: held until released

    def extend(self, seconds: float) -> None:
        self._valid_until = time.monotonic() + seconds

    def lose(self, why: str) -> None:
        self._lost = why

    def check(self) -> None:
        """Raise a JobError when the lock may no longer be this run's."""
        if self._lost is None and self._valid_until is not None \
                and time.monotonic() > self._valid_until:
            self._lost = "its lease ran out before it could be renewed"
        if self._lost is not None:
            raise JobError(f"lost the ingest lock of lake {self.lake_root} ({self._lost}); "
                           "stopped before publishing: run the ingest again")


def _ensure(spark: SparkSession, path: str) -> None:
    if lake.is_table(spark, path):
        table = lake.read(spark, path)
        if "lease_until" not in table.columns:  # a lock table from before leases
            spark.sql(f"ALTER TABLE {lake.ident(path)} ADD COLUMNS (lease_until TIMESTAMP)")
        return
    try:
        # The one row is in the table's first commit: two creators cannot make two rows.
        spark.sql(f"CREATE TABLE IF NOT EXISTS {lake.ident(path)} USING delta AS SELECT 1 AS id, "
                  "CAST(NULL AS STRING) AS holder, CAST(NULL AS TIMESTAMP) AS since, "
                  "CAST(NULL AS TIMESTAMP) AS lease_until")
    except Exception:  # noqa: BLE001 - lost the race to create it; fine if it exists now
        if not lake.is_table(spark, path):
            raise


def _state(spark: SparkSession, path: str) -> tuple[str | None, bool]:
    """(holder, whether its lease has run out), by the committing cluster's clock."""
    row = (lake.read(spark, path)
           .selectExpr("holder", "coalesce(lease_until < current_timestamp(), true) AS expired")
           .first())
    return (None, True) if row is None else (row.holder, bool(row.expired))


def _holder(spark: SparkSession, path: str) -> str | None:
    return _state(spark, path)[0]


def _lease(seconds: float) -> str:
    return f"current_timestamp() + make_interval(0, 0, 0, 0, 0, 0, {float(seconds)!r})"


def _set_holder(spark: SparkSession, path: str, condition: str, value: str | None,
                lease_seconds: float = 0.0) -> int:
    """One conditional Delta UPDATE of the lock row: ``value`` takes it with a fresh lease, None
    frees it; how many rows it changed."""
    taken = value is not None
    return _conflict_guard(lambda: lake.update(spark, path, {
        "holder": lake.sql_string(value),
        "since": "current_timestamp()" if taken else "CAST(NULL AS TIMESTAMP)",
        "lease_until": _lease(lease_seconds) if taken else "CAST(NULL AS TIMESTAMP)"},
        condition))


def _try_take(spark: SparkSession, path: str, me: str, lease_seconds: float = 120.0) -> str | None:
    """None when the lock is now ours; else who holds it."""
    holder, expired = _state(spark, path)
    if holder is None:
        condition = "holder IS NULL"
    elif expired:
        logger.warning("taking over the ingest lock of %s: its lease ran out (that run stopped "
                       "renewing it)", holder)
        condition = (f"holder = {lake.sql_string(holder)} AND "
                     "(lease_until IS NULL OR lease_until < current_timestamp())")
    else:
        return holder
    try:
        _set_holder(spark, path, condition, me, lease_seconds)
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
def ingest_lock(spark: SparkSession, config) -> Iterator[Held]:
    """Hold the lake's ingest lock for the duration (see the module's docstring for which)."""
    local = lake.local_path(spark, config.lake.root)
    wait = config.ingest.lock_wait_seconds
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        logger.info("ingest lock: the file %s", local / LOCK_FILE)
        with file_lock(local / LOCK_FILE, wait, f"lake {local} is being ingested",
                       "ingest.lock_wait_seconds") as me:
            yield Held(me, str(local))
    else:
        logger.info("ingest lock: the Delta table %s", lake.table_path(config.lake.root,
                                                                      LOCK_TABLE))
        with delta_lock(spark, config.lake.root, wait,
                        config.ingest.lock_lease_seconds) as held:
            yield held


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
def delta_lock(spark: SparkSession, root: str, wait_seconds: float,
               lease_seconds: float = 120.0) -> Iterator[Held]:
    """The lock for any store Delta commits to atomically: a conditional update of one row,
    leased and renewed while held."""
    path = lake.table_path(root, LOCK_TABLE)
    me = _me()
    _ensure(spark, path)
    deadline = time.monotonic() + wait_seconds
    announced = None
    while True:
        taken_at = time.monotonic()
        holder = _try_take(spark, path, me, lease_seconds)
        if holder is None:
            break
        if time.monotonic() >= deadline:
            raise _give_up(f"lake {root} is being ingested", holder, wait_seconds,
                           "ingest.lock_wait_seconds",
                           f"Its lease ({lease_seconds:g} s, ingest.lock_lease_seconds) is "
                           "renewed while it runs; a dead holder's runs out by itself")
        if holder and holder != announced:
            logger.info("lake %s is being ingested by %s: waiting for it", root, holder)
            announced = holder
        time.sleep(min(POLL_SECONDS, lease_seconds / 4))
    held = Held(me, root)
    held.extend(lease_seconds - (time.monotonic() - taken_at))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(spark, path, held, lease_seconds, stop),
                               name="prizeflow-ingest-lease", daemon=True)
    renewer.start()
    try:
        yield held
    finally:
        stop.set()
        renewer.join()
        _release(spark, path, me)


def _renew(spark: SparkSession, path: str, held: Held, lease_seconds: float,
           stop: threading.Event) -> None:
    """Extend the lease every third of it while the lock is held; a renewal that finds another
    holder marks the lock lost (:meth:`Held.check` then stops the ingest)."""
    while not stop.wait(lease_seconds / 3):
        started = time.monotonic()
        try:
            changed = _conflict_guard(lambda: lake.update(
                spark, path, {"lease_until": _lease(lease_seconds)},
                f"holder = {lake.sql_string(held.name)}"))
        except _Conflict:
            continue  # another run's take-over attempt committed first: look next time
        except Exception:  # noqa: BLE001 - a failed renewal is retried; check() sees the lease
            logger.warning("could not renew the ingest lock %s", path, exc_info=True)
            continue
        if changed == 0:
            held.lose(f"another run holds it now: {_holder(spark, path)}")
            return
        held.extend(lease_seconds - (time.monotonic() - started))


def _release(spark: SparkSession, path: str, me: str) -> None:
    """Clear the lock if it is still ours. Never raises: the ingest's own outcome (or error)
    is what the caller must see; a lock left behind runs out with its lease."""
    for _ in range(10):  # a conflict here is only another run taking it: try again
        try:
            _set_holder(spark, path, f"holder = {lake.sql_string(me)}", None)
            return
        except _Conflict:
            time.sleep(0.2)
        except Exception:  # noqa: BLE001 - see the docstring
            logger.warning("could not release the ingest lock %s", path, exc_info=True)
            return
    logger.warning("could not release the ingest lock %s (held by %s): its lease runs out by "
                   "itself", path, me)
