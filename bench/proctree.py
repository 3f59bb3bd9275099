"""Run a command and sample its whole process tree (JVM and Python workers included) from /proc.

    .venv/bin/python bench/proctree.py [--interval 1] [--samples FILE] -- CMD [ARGS...]

Linux only, no dependencies. Every ``interval`` seconds it sums over the live processes of the
tree: resident memory (RSS; and PSS, which shares copy-on-write pages of forked Python workers
fairly instead of counting them once per process) and CPU time (user + system, plus that of
reaped children). The command's own output passes through. At the end it prints one JSON line on
stderr: wall seconds, CPU seconds (from ``wait4``, exact), peak RSS and PSS in bytes; with
``--samples`` every sample is written as JSON lines (t, cpu, rss, pss) for per-stage accounting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[bytes]:
    """The fields of a /proc .../stat file after the command name, from the state field on."""
    with open(path, "rb") as handle:
        stat = handle.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return stat[stat.rfind(b")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{name}/stat")
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def tree(root: int) -> list[int]:
    children = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(f"/proc/{pid}/stat")
    # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the state field).
    return sum(int(x) for x in fields[11:15]) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by the live processes under ``root`` (root included), with the
    time of children they reaped; a process that ends while this reads is skipped."""
    total = 0.0
    for pid in tree(root):
        try:
            total += _cpu_seconds(pid)
        except OSError:
            continue
    return total


# JVM thread names as Linux keeps them (15 characters), by what the thread does.
JVM_THREAD_KINDS = (("Executor task", "tasks"), ("GC Thread", "gc"), ("G1 ", "gc"),
                    ("C2 Compiler", "jit"), ("C1 Compiler", "jit"))


def jvm_threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of one JVM's live threads by kind (tasks, gc, jit, other), plus
    ``exited``: the process's total minus its live threads (threads that ended)."""
    kinds = {"tasks": 0.0, "gc": 0.0, "jit": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as handle:
                name = handle.read().strip()
            seconds = _own_seconds(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        kind = next((k for prefix, k in JVM_THREAD_KINDS if name.startswith(prefix)), "other")
        kinds[kind] += seconds
    kinds["exited"] = _own_seconds(f"/proc/{pid}/stat") - sum(kinds.values())
    return kinds


def _own_seconds(path: str) -> float:
    """utime + stime of one stat file (a thread's, or a process's without its children)."""
    fields = _stat_fields(path)
    return (int(fields[11]) + int(fields[12])) / TICK


def _memory(pid: int) -> tuple[int, int]:
    """(rss, pss) in bytes."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
        for line in handle:
            if line.startswith(b"Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def disk_used(path: str) -> int:
    """Bytes in use on the filesystem holding ``path`` (scratch = the growth of this)."""
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


@dataclass
class Sample:
    t: float  # unix time
    cpu: float  # seconds, cumulative over the tree
    rss: int
    pss: int
    disk: int = 0  # bytes used on the watched filesystem


@dataclass
class Monitor:
    root: int
    interval: float = 1.0
    disk_path: str | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _gone_cpu: float = 0.0

    def sample(self) -> None:
        cpu, rss, pss = 0.0, 0, 0
        seen: dict[int, float] = {}
        for pid in tree(self.root):
            try:
                seen[pid] = _cpu_seconds(pid)
                r, p = _memory(pid)
            except (OSError, ValueError):
                continue
            rss += r
            pss += p
        # A process that vanished keeps the CPU it had at its last sample (its final moments
        # are lost unless a parent in the tree reaped it, which moves them into cutime).
        for pid, value in self._last_cpu.items():
            if pid not in seen:
                self._gone_cpu += value
        self._last_cpu = seen
        cpu = self._gone_cpu + sum(seen.values())
        disk = disk_used(self.disk_path) if self.disk_path else 0
        self.samples.append(Sample(time.time(), cpu, rss, pss, disk))

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def run_monitored(command: list[str], interval: float = 1.0, env: dict | None = None,
                  stdout=None, stderr=None, cwd=None, disk_path: str | None = None) -> dict:
    """Run ``command`` to completion; returns wall, cpu, peak rss/pss/disk, returncode, samples
    and, with ``stdout=subprocess.PIPE``, the text it printed."""
    started = time.time()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, cwd=cwd,
                               text=True)
    monitor = Monitor(process.pid, interval, disk_path)
    thread = monitor.start()
    printed: list[str] = []
    reader = None
    if process.stdout is not None:
        reader = threading.Thread(target=lambda: printed.append(process.stdout.read()),
                                  daemon=True)
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    monitor.stop()
    thread.join()
    if reader is not None:
        reader.join()
    return {"command": command, "returncode": process.returncode,
            "wall_seconds": round(time.time() - started, 3),
            # wait4 covers only reaped descendants: a JVM that outlives its waiting parent
            # is in the samples only.
            "cpu_seconds": round(max(usage.ru_utime + usage.ru_stime,
                                     monitor.samples[-1].cpu if monitor.samples else 0.0), 3),
            "peak_rss_bytes": max((s.rss for s in monitor.samples), default=0),
            "peak_pss_bytes": max((s.pss for s in monitor.samples), default=0),
            "peak_disk_bytes": max((s.disk for s in monitor.samples), default=0),
            "samples": monitor.samples, "stdout": "".join(printed)}


def window(samples: list[Sample], start: float, end: float) -> dict:
    """CPU seconds and peak memory of the samples between two unix times."""
    inside = [s for s in samples if start <= s.t <= end]
    before = [s for s in samples if s.t <= start]
    after = [s for s in samples if s.t >= end]
    cpu_start = before[-1].cpu if before else (inside[0].cpu if inside else 0.0)
    cpu_end = after[0].cpu if after else (inside[-1].cpu if inside else cpu_start)
    edge = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
    return {"cpu_seconds": round(cpu_end - cpu_start, 1),
            "peak_rss_bytes": max((s.rss for s in edge), default=0),
            "peak_pss_bytes": max((s.pss for s in edge), default=0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--samples", default=None, help="write samples as JSON lines here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    result = run_monitored(command, args.interval)
    if args.samples:
        with open(args.samples, "w") as handle:
            for s in result["samples"]:
                handle.write(json.dumps(s.__dict__) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("samples", "stdout")}
    print(json.dumps(summary), file=sys.stderr)
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
