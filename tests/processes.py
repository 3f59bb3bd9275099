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


def process_tree(root: int) -> set[int]:
    """``root`` and every process below it (from /proc: Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return tree


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex address as text (IPv4, or IPv6 with ::ffff: for a
    mapped IPv4 one)."""
    import ipaddress

    raw = bytes.fromhex(hex_address)
    # Each 32-bit word is stored in host (little-endian) order.
    ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(ordered))


def listening_sockets(root: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket listening in ``root``'s process tree."""
    inodes = set()
    for pid in process_tree(root):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append((_address(address), int(port, 16)))
    return sorted(found)


def is_loopback(address: str) -> bool:
    import ipaddress

    parsed = ipaddress.ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return (mapped or parsed).is_loopback
