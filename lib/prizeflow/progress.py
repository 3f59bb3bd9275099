"""Progress a person can follow: no silent stretch longer than ``PRIZEFLOW_PROGRESS_SECONDS``
(default 15).

The pipeline logs a line when a step starts and when countable work advances (files, grid
points, iterations). In between, a daemon thread watches the log: when nothing was logged for
that long, it logs what is running from Spark's own progress (the step, how long it has run,
tasks done of the active stages, and a time-left estimate for those stages from the tasks'
pace). A classic session's figures come from Spark's status tracker; a Spark Connect session's
from the progress handler registered on it (:class:`ConnectStages`), which the server reports
per operation.

When stderr is a terminal, the same figures are also drawn as one bar updated in place every
second (``step [#####-----] 45% 123/270 tasks, 1m20s left``), wiped before any log line so the
log stays readable; where stderr is a file or a pipe (a log, Airflow), only the plain lines.
``PRIZEFLOW_PROGRESS_BAR=0`` turns the bar off.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

from prizeflow.sessions import connect_state, is_connect

logger = logging.getLogger(__name__)

_state = {"step": None, "since": time.monotonic(), "last_line": time.monotonic(), "bar": None}
BAR_WIDTH = 24
_WIPE = "\r\x1b[K"  # carriage return, erase to the end of the line


class _Activity(logging.Handler):
    """Notes when anything was last logged (the heartbeat's own lines excluded), and wipes the
    terminal bar first: it is the root's first handler, before the one that writes stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        _wipe_bar()
        if record.name != __name__:
            _state["last_line"] = time.monotonic()


def _wipe_bar() -> None:
    stream = _state["bar"]
    if stream is not None:
        try:
            stream.write(_WIPE)
            stream.flush()
        except (OSError, ValueError):  # closed under us: nothing left to wipe
            pass


_activity = _Activity(level=logging.INFO)


def make_way() -> None:
    """Something else is about to write to the terminal (the driver JVM's stderr): wipe the bar,
    and count it as a line, as a log line would."""
    _wipe_bar()
    _state["last_line"] = time.monotonic()


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


class ConnectStages:
    """What a Spark Connect client knows of the running stages (it has no status tracker): the
    server's progress reports of each operation in flight, registered as a progress handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: dict[str, tuple[float, list]] = {}

    def __call__(self, stages, inflight_tasks, operation_id, done, **_) -> None:
        with self._lock:
            if done:
                self._operations.pop(operation_id, None)
                return
            started = self._operations.get(operation_id, (time.time(), []))[0]
            self._operations[operation_id] = (started, [s for s in stages or () if not s.done])

    def progress(self) -> tuple[int, int, float | None]:
        with self._lock:
            operations = list(self._operations.values())
        done = sum(s.num_completed_tasks for _, stages in operations for s in stages)
        total = sum(s.num_tasks for _, stages in operations for s in stages)
        left = None
        if done and total and operations:
            started = min(started for started, _ in operations)
            left = (time.time() - started) * (total - done) / done
        return done, total, left


def spark_progress(spark) -> tuple[int, int, float | None]:
    """(tasks done, tasks, seconds left or None) of Spark's active stages."""
    if is_connect(spark):
        stages = connect_state(spark).progress_handler
        return stages.progress() if stages is not None else (0, 0, None)
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
    left = None
    if done and total and started is not None:
        left = (time.time() - started) * (total - done) / done
    return done, total, left


def describe_spark(spark) -> str:
    """Tasks done of Spark's active stages, with a time-left estimate from their pace."""
    done, total, left = spark_progress(spark)
    if total == 0:
        return "Spark: no stage running (driver work)"
    text = f"Spark: {done}/{total} tasks of the running stages"
    if left is not None:
        text += f", about {_clock(left)} left for them"
    return text


def bar_line(step_name: str, running: float, done: int, total: int,
             left: float | None) -> str:
    """One terminal line: the step, a bar of the running stages' tasks, and the time left."""
    if total == 0:
        return f"{step_name} {_clock(running)} (driver work)"
    filled = BAR_WIDTH * done // total
    text = (f"{step_name} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{100 * done // total}% {done}/{total} tasks")
    return text + (f", {_clock(left)} left" if left is not None else "")


class Heartbeat:
    """The watching thread; ``with Heartbeat(spark):`` around a job."""

    def __init__(self, spark, every: float | None = None, stream: TextIO | None = None) -> None:
        self.spark = spark
        self.every = every or float(os.environ.get("PRIZEFLOW_PROGRESS_SECONDS", "15"))
        stream = stream or sys.stderr
        wanted = os.environ.get("PRIZEFLOW_PROGRESS_BAR", "1") != "0"
        self.bar_stream = stream if wanted and _is_terminal(stream) else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prizeflow-progress", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.spark is not None:
            if is_connect(self.spark) and connect_state(self.spark).progress_handler is None:
                connect_state(self.spark).progress_handler = ConnectStages()
                self.spark.registerProgressHandler(connect_state(self.spark).progress_handler)
            _state["last_line"] = time.monotonic()
            # First among the root's handlers: the bar is wiped before any logger's line.
            root = logging.getLogger()
            if _activity not in root.handlers:
                root.handlers.insert(0, _activity)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        _wipe_bar()
        _state["bar"] = None
        logging.getLogger().removeHandler(_activity)

    def _draw(self) -> None:
        try:
            done, total, left = spark_progress(self.spark)
        except Exception:  # noqa: BLE001 - the session may be stopping
            return
        line = bar_line(_state["step"] or "working", time.monotonic() - _state["since"], done,
                        total, left)
        try:
            self.bar_stream.write(_WIPE + line)
            self.bar_stream.flush()
            _state["bar"] = self.bar_stream
        except (OSError, ValueError):
            self.bar_stream = None

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            if self.bar_stream is not None:
                self._draw()
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


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
