"""Progress a person can follow: no silent stretch longer than ``PRIZEFLOW_PROGRESS_SECONDS``
(default 15).

The pipeline logs a line when a step starts and when countable work advances (files, grid
points, iterations). In between, a daemon thread watches the log: when nothing was logged for
that long, it logs what is running from Spark's own progress (the step, how long it has run,
tasks done of the active stages, and a time-left estimate for those stages from the tasks'
pace). It reads Spark's status tracker, so it runs in classic mode only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)

_state = {"step": None, "since": time.monotonic(), "last_line": time.monotonic()}


class _Activity(logging.Handler):
    """Notes when prizeflow last logged anything (the heartbeat's own lines excluded)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != __name__:
            _state["last_line"] = time.monotonic()


_activity = _Activity(level=logging.INFO)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Name what runs now (shown by the heartbeat)."""
    previous = (_state["step"], _state["since"])
    _state["step"], _state["since"] = name, time.monotonic()
    try:
        yield
    finally:
        _state["step"], _state["since"] = previous


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _submitted(tracker, stage_id: int) -> float | None:
    """When a stage was submitted (unix seconds): the Java tracker has it, PySpark's does not."""
    try:
        millis = tracker._jtracker.getStageInfo(stage_id).submissionTime()
    except Exception:  # noqa: BLE001 - a stage that just ended, or no such field
        return None
    return millis / 1000 if millis and millis > 0 else None


def describe_spark(spark) -> str:
    """Tasks done of Spark's active stages, with a time-left estimate from their pace."""
    tracker = spark.sparkContext.statusTracker()
    done = total = 0
    started = None
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is None:
            continue
        done += info.numCompletedTasks
        total += info.numTasks
        submitted = _submitted(tracker, stage_id)
        if submitted is not None:
            started = submitted if started is None else min(started, submitted)
    if total == 0:
        return "Spark: no stage running (driver work)"
    text = f"Spark: {done}/{total} tasks of the running stages"
    if done and started is not None:
        elapsed = time.time() - started
        text += f", about {_clock(elapsed * (total - done) / done)} left for them"
    return text


class Heartbeat:
    """The watching thread; ``with Heartbeat(spark):`` around a job."""

    def __init__(self, spark, every: float | None = None) -> None:
        self.spark = spark
        self.every = every or float(os.environ.get("PRIZEFLOW_PROGRESS_SECONDS", "15"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prizeflow-progress", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.spark is not None and hasattr(self.spark, "sparkContext"):
            _state["last_line"] = time.monotonic()
            logging.getLogger("prizeflow").addHandler(_activity)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        logging.getLogger("prizeflow").removeHandler(_activity)

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            quiet = time.monotonic() - _state["last_line"]
            if quiet < self.every:
                continue
            try:
                spark_text = describe_spark(self.spark)
            except Exception:  # noqa: BLE001 - the session may be stopping; stay silent
                logger.debug("no Spark status", exc_info=True)
                spark_text = "Spark status unavailable"
            step_name = _state["step"] or "working"
            logger.info("%s: running for %s; %s", step_name,
                        _clock(time.monotonic() - _state["since"]), spark_text)
            _state["last_line"] = time.monotonic()
