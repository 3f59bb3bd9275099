"""Helpers for tests that drive real processes: the pipeline's environment for spark-submit,
free ports, daemons started in their own process group and stopped by it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

BIN = Path(sys.executable).parent


def pipeline_env(**extra: str) -> dict[str, str]:
    """os.environ plus what spark-submit and spark-class need to use this venv's Spark/Python."""
    import pyspark

    env = {**os.environ, "PRIZEFLOW_LOG_LEVEL": "INFO",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "SPARK_HOME": os.path.dirname(pyspark.__file__),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a long-running process in its own session so stop_daemon can end all of it."""
    log = open(log_path, "w")
    try:
        return subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    finally:
        log.close()  # the child keeps its own descriptor


def stop_daemon(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until(ready: Callable[[], bool], what: str, processes: list[subprocess.Popen],
               logs: list[Path], timeout: float = 180) -> None:
    """Poll ``ready()`` until true; fail with the logs if a process died or time ran out."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [p for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
            raise AssertionError(f"{what}: {'a process exited' if dead else 'timed out'}\n{tails}")
        time.sleep(1)


def answers(url: str) -> bool:
    """True when a GET of ``url`` returns 200 (a server's health or ping endpoint)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def generate_corpus(out: Path, ratings: int, users: int, movies: int, seed: int,
                    *options: str) -> None:
    """A generated corpus written by `prizeflow generate`, as a user would make one."""
    result = subprocess.run([str(BIN / "prizeflow"), "generate", "--out", str(out), "--ratings",
                             str(ratings), "--users", str(users), "--movies", str(movies),
                             "--seed", str(seed), *options],
                            capture_output=True, text=True, timeout=300, env=pipeline_env())
    assert result.returncode == 0, result.stderr
