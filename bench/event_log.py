"""What each stage of a Spark application did, from its event log (standard library only).

    .venv/bin/python bench/event_log.py EVENT_LOG [--top 25] [--json OUT.json] [--jobs]

EVENT_LOG is what a run with ``spark.eventLog.enabled=true`` leaves in ``spark.eventLog.dir``:
a JSON-lines file (``.inprogress`` while the application runs), or the ``eventlog_v2_*`` folder
of a rolling log (its ``events_N_*`` files are read in order). Files compressed with zstd
(Spark 4's default codec) are read through the ``zstd`` command. A log still being written may
end in a cut line or a cut zstd frame: what could be read is summarized.

Prints the command line; then one row per stage attempt in order of submission: tasks ended
(/ the stage's tasks when they differ), wall seconds (submission to completion, or to the log's
last event while running), the tasks' summed executor run, executor CPU, JVM GC and result
serialization seconds, shuffle read and write (bytes, records), memory and disk bytes spilled,
input and output (bytes, records), the largest peak execution memory of a task, the stage's
job and SQL execution ids and its name; the top N stages by wall time; totals; each executor's
peak memory metrics when the log has executor metrics; and, with ``--jobs``, each job with its
description (``spark.job.description``, else ``callSite.short``, else its last stage's name)
and its SQL execution's. ``--json`` writes the stage rows (raw bytes and seconds) to a file.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SQL_START = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"
SQL_END = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd"
MEMORY_METRICS = ("JVMHeapMemory", "JVMOffHeapMemory", "OnHeapExecutionMemory",
                  "OnHeapStorageMemory", "OffHeapExecutionMemory", "DirectPoolMemory",
                  "ProcessTreeJVMRSSMemory", "ProcessTreePythonRSSMemory")
# Per-task sums: (row key, path in "Task Metrics", divisor to seconds, or 1 for a count).
TASK_SUMS = (
    ("run_s", ("Executor Run Time",), 1e3),
    ("cpu_s", ("Executor CPU Time",), 1e9),
    ("gc_s", ("JVM GC Time",), 1e3),
    ("result_serialization_s", ("Result Serialization Time",), 1e3),
    ("shuffle_read_bytes", ("Shuffle Read Metrics", "Remote Bytes Read"), 1),
    ("shuffle_read_bytes", ("Shuffle Read Metrics", "Local Bytes Read"), 1),
    ("shuffle_read_records", ("Shuffle Read Metrics", "Total Records Read"), 1),
    ("fetch_wait_s", ("Shuffle Read Metrics", "Fetch Wait Time"), 1e3),
    ("shuffle_write_bytes", ("Shuffle Write Metrics", "Shuffle Bytes Written"), 1),
    ("shuffle_write_records", ("Shuffle Write Metrics", "Shuffle Records Written"), 1),
    ("shuffle_write_s", ("Shuffle Write Metrics", "Shuffle Write Time"), 1e9),
    ("memory_spilled", ("Memory Bytes Spilled",), 1),
    ("disk_spilled", ("Disk Bytes Spilled",), 1),
    ("input_bytes", ("Input Metrics", "Bytes Read"), 1),
    ("input_records", ("Input Metrics", "Records Read"), 1),
    ("output_bytes", ("Output Metrics", "Bytes Written"), 1),
    ("output_records", ("Output Metrics", "Records Written"), 1),
)
SUMMED = tuple(dict.fromkeys(key for key, _, _ in TASK_SUMS))
TOTALLED = ("tasks", "wall_s") + SUMMED


def log_files(path: Path) -> list[Path]:
    """The files of one event log: the file itself, or a rolling log folder's ``events_N_*``
    files by N."""
    if not path.is_dir():
        return [path]
    files = [f for f in path.iterdir() if re.match(r"events_\d+_", f.name)]
    return sorted(files, key=lambda f: int(f.name.split("_")[1]))


def file_lines(path: Path, notes: list[str]):
    """The text lines of one log file, decompressing zstd through the ``zstd`` command; a cut
    zstd stream (a log being written) yields what could be decoded and adds a note."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != ZSTD_MAGIC:
        if magic[:1] not in (b"{", b""):
            raise SystemExit(f"{path}: not JSON lines nor zstd (another spark.io.compression"
                             ".codec?): rerun with spark.eventLog.compress=false")
        with open(path, encoding="utf-8", errors="replace") as handle:
            yield from handle
        return
    try:
        zstd = subprocess.Popen(["zstd", "-dcq", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise SystemExit(f"{path} is zstd-compressed and the zstd command is not installed")
    with zstd:
        yield from (line.decode("utf-8", errors="replace") for line in zstd.stdout)
        error = zstd.stderr.read().decode(errors="replace").strip()
    if zstd.returncode:
        notes.append(f"{path.name}: zstd stopped early (a log being written?): {error[:120]}")


def read_events(path: Path, notes: list[str]):
    """Each event of the log, as a dict; an unparsable last line (cut while being written) is
    skipped with a note, an unparsable line elsewhere stops the reading."""
    files = log_files(path)
    for file_number, file in enumerate(files, 1):
        pending = None
        for line_number, line in enumerate(file_lines(file, notes), 1):
            if pending is not None:
                yield parse_line(*pending, file)
            pending = (line, line_number)
        if pending is None:
            continue
        try:
            yield json.loads(pending[0])
        except json.JSONDecodeError:
            if file_number < len(files):
                raise SystemExit(f"{file}:{pending[1]}: not JSON")
            notes.append(f"skipped the unparsable last line {pending[1]} "
                         f"({len(pending[0])} chars): the log is being written")


def parse_line(line: str, line_number: int, file: Path) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise SystemExit(f"{file}:{line_number}: not JSON ({error})")


def new_stage_row(stage_id: int, attempt: int) -> dict:
    row = {"stage_id": stage_id, "attempt": attempt, "name": "", "status": "running",
           "num_tasks": 0, "tasks": 0, "failed_tasks": 0, "submitted_ms": None,
           "completed_ms": None, "wall_s": 0.0, "peak_execution_memory": 0,
           "job_id": None, "sql_id": None}
    row.update(dict.fromkeys(SUMMED, 0))
    return row


def update_stage_info(row: dict, info: dict) -> None:
    details = (info.get("Details") or "").split("\n", 1)[0]
    row["name"] = (info.get("Stage Name") or details)[:60]
    row["num_tasks"] = info.get("Number of Tasks", row["num_tasks"])
    row["submitted_ms"] = info.get("Submission Time", row["submitted_ms"])
    row["completed_ms"] = info.get("Completion Time", row["completed_ms"])


def add_task(row: dict, event: dict) -> None:
    metrics = event.get("Task Metrics") or {}
    row["tasks"] += 1
    if (event.get("Task End Reason") or {}).get("Reason", "Success") != "Success":
        row["failed_tasks"] += 1
    for key, field_path, divisor in TASK_SUMS:
        value = metrics
        for field in field_path:
            value = value.get(field, 0) if isinstance(value, dict) else 0
        row[key] += value / divisor if divisor != 1 else value
    row["peak_execution_memory"] = max(row["peak_execution_memory"],
                                       metrics.get("Peak Execution Memory", 0))


def note_executor_metrics(peaks: dict, executor: str, metrics: dict | None) -> None:
    for name in MEMORY_METRICS:
        if metrics and name in metrics:
            mine = peaks.setdefault(executor, dict.fromkeys(MEMORY_METRICS, 0))
            mine[name] = max(mine[name], metrics[name])


def event_time(event: dict) -> int | None:
    """The event's own time in ms, when it has one."""
    for holder in (event, event.get("Stage Info") or {}, event.get("Task Info") or {}):
        for field in ("time", "Timestamp", "Submission Time", "Completion Time", "Finish Time"):
            if isinstance(holder.get(field), int):
                return holder[field]
    return None


def summarize(events) -> dict:
    """{"app": {...}, "stages": [row by submission], "jobs": {id: job}, "sql": {id: sql},
    "executors": {id: peaks}} from the events."""
    app, stages, jobs, sql, executors = {}, {}, {}, {}, {}
    last_time = None
    for event in events:
        kind = event.get("Event")
        last_time = max(filter(None, (last_time, event_time(event))), default=None)
        if kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
            info = event["Stage Info"]
            row = stages.setdefault((info["Stage ID"], info.get("Stage Attempt ID", 0)),
                                    new_stage_row(info["Stage ID"],
                                                  info.get("Stage Attempt ID", 0)))
            update_stage_info(row, info)
            sql_id = (event.get("Properties") or {}).get("spark.sql.execution.id")
            if sql_id is not None:
                row["sql_id"] = int(sql_id)
            if kind == "SparkListenerStageCompleted":
                row["status"] = "failed" if info.get("Failure Reason") else "complete"
        elif kind == "SparkListenerTaskEnd":
            key = (event["Stage ID"], event.get("Stage Attempt ID", 0))
            add_task(stages.setdefault(key, new_stage_row(*key)), event)
            note_executor_metrics(executors, (event.get("Task Info") or {}).get("Executor ID", "?"),
                                  event.get("Task Executor Metrics"))
        elif kind == "SparkListenerStageExecutorMetrics":
            note_executor_metrics(executors, event.get("Executor ID", "?"),
                                  event.get("Executor Metrics"))
        elif kind == "SparkListenerExecutorMetricsUpdate":
            for update in event.get("Executor Metrics Updated") or []:
                note_executor_metrics(executors, event.get("Executor ID", "?"),
                                      update.get("Executor Metrics"))
        elif kind == "SparkListenerJobStart":
            jobs[event["Job ID"]] = new_job(event)
        elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
            jobs[event["Job ID"]]["completed_ms"] = event.get("Completion Time")
            jobs[event["Job ID"]]["result"] = (event.get("Job Result") or {}).get("Result")
        elif kind == SQL_START:
            sql[event["executionId"]] = {"description": event.get("description", ""),
                                         "started_ms": event.get("time"), "ended_ms": None}
        elif kind == SQL_END and event["executionId"] in sql:
            sql[event["executionId"]]["ended_ms"] = event.get("time")
        elif kind == "SparkListenerApplicationStart":
            app.update(name=event.get("App Name"), started_ms=event.get("Timestamp"))
        elif kind == "SparkListenerLogStart":
            app["spark_version"] = event.get("Spark Version")
        elif kind == "SparkListenerEnvironmentUpdate":
            app["master"] = (event.get("Spark Properties") or {}).get("spark.master")
        elif kind == "SparkListenerApplicationEnd":
            app["ended_ms"] = event.get("Timestamp")
    app["last_event_ms"] = last_time
    rows = sorted(stages.values(), key=lambda r: (r["submitted_ms"] or 0, r["stage_id"]))
    for row in rows:
        finish = row["completed_ms"] if row["status"] != "running" else last_time
        if row["submitted_ms"] is not None and finish is not None:
            row["wall_s"] = (finish - row["submitted_ms"]) / 1e3
        row["job_id"] = job_of_stage(jobs, row)
        if row["sql_id"] is None and row["job_id"] is not None:
            row["sql_id"] = jobs[row["job_id"]]["sql_id"]
        row["sql_description"] = (sql.get(row["sql_id"]) or {}).get("description")
        row["job_description"] = (jobs.get(row["job_id"]) or {}).get("description")
    return {"app": app, "stages": rows, "jobs": jobs, "sql": sql, "executors": executors}


def new_job(event: dict) -> dict:
    properties = event.get("Properties") or {}
    last_stage = max(event.get("Stage Infos") or [{}], key=lambda s: s.get("Stage ID", -1))
    description = (properties.get("spark.job.description") or properties.get("callSite.short")
                   or last_stage.get("Stage Name", ""))
    sql_id = properties.get("spark.sql.execution.id")
    return {"job_id": event["Job ID"], "description": description,
            "stage_ids": event.get("Stage IDs", []), "submitted_ms": event.get("Submission Time"),
            "completed_ms": None, "result": None,
            "sql_id": int(sql_id) if sql_id is not None else None}


def job_of_stage(jobs: dict, row: dict) -> int | None:
    """The latest job submitted by the stage's submission that lists the stage (a later job
    lists it too, as skipped, when it reuses the stage's shuffle output)."""
    owners = [job for job in jobs.values() if row["stage_id"] in job["stage_ids"]
              and (row["submitted_ms"] is None or job["submitted_ms"] is None
                   or job["submitted_ms"] <= row["submitted_ms"])]
    return max(owners, key=lambda job: job["job_id"])["job_id"] if owners else None


def totals(rows: list[dict]) -> dict:
    total = {key: sum(row[key] for row in rows) for key in TOTALLED}
    total["peak_execution_memory"] = max((row["peak_execution_memory"] for row in rows),
                                         default=0)
    return total


def size(value: float) -> str:
    """Bytes, human-readable (binary units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024


def count(value: float) -> str:
    """A record count, short (1.2M)."""
    for unit in ("", "k", "M", "G"):
        if abs(value) < 1000 or unit == "G":
            return f"{value:.0f}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000


# (header, width, how one row shows it)
STAGE_COLUMNS = (
    ("start s", 8, lambda r, t0: f"{((r['submitted_ms'] or t0) - t0) / 1e3:.1f}"),
    ("stage", 7, lambda r, _: f"{r['stage_id']}" + (f".{r['attempt']}" if r["attempt"] else "")),
    ("tasks", 9, lambda r, _: (str(r["tasks"]) if r["tasks"] == r["num_tasks"]
                               else f"{r['tasks']}/{r['num_tasks']}")),
    ("wall s", 8, lambda r, _: f"{r['wall_s']:.1f}" + ("+" if r["status"] == "running" else
                                                         "!" if r["status"] == "failed" else "")),
    ("run s", 8, lambda r, _: f"{r['run_s']:.1f}"),
    ("cpu s", 8, lambda r, _: f"{r['cpu_s']:.1f}"),
    ("gc s", 7, lambda r, _: f"{r['gc_s']:.1f}"),
    ("ser s", 6, lambda r, _: f"{r['result_serialization_s']:.1f}"),
    ("shuf read", 10, lambda r, _: size(r["shuffle_read_bytes"])),
    ("rd recs", 8, lambda r, _: count(r["shuffle_read_records"])),
    ("shuf write", 10, lambda r, _: size(r["shuffle_write_bytes"])),
    ("wr recs", 8, lambda r, _: count(r["shuffle_write_records"])),
    ("mem spill", 10, lambda r, _: size(r["memory_spilled"])),
    ("disk spill", 10, lambda r, _: size(r["disk_spilled"])),
    ("input", 10, lambda r, _: size(r["input_bytes"])),
    ("in recs", 8, lambda r, _: count(r["input_records"])),
    ("output", 10, lambda r, _: size(r["output_bytes"])),
    ("out recs", 8, lambda r, _: count(r["output_records"])),
    ("peak exec", 10, lambda r, _: size(r["peak_execution_memory"])),
    ("job", 4, lambda r, _: "" if r["job_id"] is None else str(r["job_id"])),
    ("sql", 4, lambda r, _: "" if r["sql_id"] is None else str(r["sql_id"])),
)


def print_stage_table(title: str, rows: list[dict], origin_ms: int) -> None:
    print(f"\n{title}")
    print(" ".join(f"{h:>{w}}" for h, w, _ in STAGE_COLUMNS) + "  name")
    for row in rows:
        print(" ".join(f"{show(row, origin_ms):>{w}}" for _, w, show in STAGE_COLUMNS)
              + f"  {row['name']}")


def print_totals(rows: list[dict]) -> None:
    total = totals(rows)
    print(f"\ntotals over {len(rows)} stage attempts, {total['tasks']} tasks:")
    print(f"  wall (stages summed) {total['wall_s']:.1f} s   executor run {total['run_s']:.1f} s"
          f"   executor CPU {total['cpu_s']:.1f} s   JVM GC {total['gc_s']:.1f} s"
          f"   result serialization {total['result_serialization_s']:.1f} s")
    print(f"  shuffle read {size(total['shuffle_read_bytes'])} "
          f"({count(total['shuffle_read_records'])} records, fetch wait "
          f"{total['fetch_wait_s']:.1f} s)   shuffle write {size(total['shuffle_write_bytes'])} "
          f"({count(total['shuffle_write_records'])} records, {total['shuffle_write_s']:.1f} s)")
    print(f"  spilled: memory {size(total['memory_spilled'])}, disk {size(total['disk_spilled'])}"
          f"   input {size(total['input_bytes'])} ({count(total['input_records'])} records)"
          f"   output {size(total['output_bytes'])} ({count(total['output_records'])} records)"
          f"   largest task peak execution memory {size(total['peak_execution_memory'])}")


def print_executors(executors: dict) -> None:
    if not executors:
        return
    print("\nexecutor peak memory (from the executor metrics in the log)")
    print(f"{'executor':>10} " + " ".join(f"{name:>11}" for name in MEMORY_METRICS))
    for executor, peaks in sorted(executors.items()):
        print(f"{executor:>10} " + " ".join(f"{size(peaks[name]):>{max(11, len(name))}}"
                                           for name in MEMORY_METRICS))


def print_jobs(summary: dict, origin_ms: int) -> None:
    print("\njobs")
    print(f"{'job':>5} {'start s':>8} {'wall s':>8} {'stages':>6} {'sql':>4} {'result':>13}"
          "  description | SQL description")
    last = summary["app"]["last_event_ms"] or origin_ms
    for job in sorted(summary["jobs"].values(), key=lambda j: j["job_id"]):
        start = job["submitted_ms"] or origin_ms
        wall = ((job["completed_ms"] or last) - start) / 1e3
        sql = summary["sql"].get(job["sql_id"]) or {}
        print(f"{job['job_id']:>5} {(start - origin_ms) / 1e3:>8.1f} {wall:>8.1f} "
              f"{len(job['stage_ids']):>6} {'' if job['sql_id'] is None else job['sql_id']:>4} "
              f"{job['result'] or 'running':>13}  {job['description'][:70]}"
              + (f" | {sql['description'][:50]}" if sql.get("description") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="event log file or eventlog_v2_* folder")
    parser.add_argument("--top", type=int, default=25, help="stages in the wall-time table")
    parser.add_argument("--json", type=Path, metavar="OUT.json",
                        help="write the per-stage rows here")
    parser.add_argument("--jobs", action="store_true", help="also list the jobs")
    args = parser.parse_args(argv)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    notes: list[str] = []
    summary = summarize(read_events(args.log, notes))
    app, rows = summary["app"], summary["stages"]
    origin = app.get("started_ms") or min((r["submitted_ms"] or 0 for r in rows), default=0)
    state = "ended" if app.get("ended_ms") else "in progress (no ApplicationEnd yet)"
    print(f"log: {args.log}\napp: {app.get('name')} on {app.get('master')} (Spark "
          f"{app.get('spark_version')}), {state}, "
          f"{len(rows)} stage attempts, {len(summary['jobs'])} jobs, "
          f"{len(summary['sql'])} SQL executions; times from the app's start; "
          "stage N.A = attempt A of stage N; wall s + = still running, ! = failed")
    for note in notes:
        print(f"note: {note}")
    print_stage_table("stages by submission", rows, origin)
    top = sorted(rows, key=lambda r: r["wall_s"], reverse=True)[:args.top]
    print_stage_table(f"top {len(top)} stages by wall time", top, origin)
    print_totals(rows)
    print_executors(summary["executors"])
    if args.jobs:
        print_jobs(summary, origin)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"\nwrote {len(rows)} stage rows to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
