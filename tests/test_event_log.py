"""bench/event_log.py (loaded by its path: bench/ is no package) on a small hand-written event
log still being written: its stage sums, spill, wall seconds and job, and its cut last line.
Pure Python, no Spark."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("event_log", PROJECT / "bench" / "event_log.py")
event_log = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(event_log)


def _task_end(run_ms: int, cpu_ns: int, spilled: int, peak: int) -> dict:
    return {"Event": "SparkListenerTaskEnd", "Stage ID": 3, "Stage Attempt ID": 0,
            "Task End Reason": {"Reason": "Success"},
            "Task Info": {"Executor ID": "driver", "Finish Time": 1_000_009_000},
            "Task Executor Metrics": {"JVMHeapMemory": peak * 4},
            "Task Metrics": {
                "Executor Run Time": run_ms, "Executor CPU Time": cpu_ns, "JVM GC Time": 250,
                "Result Serialization Time": 1, "Memory Bytes Spilled": spilled,
                "Disk Bytes Spilled": spilled // 4, "Peak Execution Memory": peak,
                "Shuffle Read Metrics": {"Remote Bytes Read": 100, "Local Bytes Read": 900,
                                         "Total Records Read": 50, "Fetch Wait Time": 0},
                "Shuffle Write Metrics": {"Shuffle Bytes Written": 2048,
                                          "Shuffle Records Written": 20,
                                          "Shuffle Write Time": 1_000_000},
                "Input Metrics": {"Bytes Read": 0, "Records Read": 0},
                "Output Metrics": {"Bytes Written": 0, "Records Written": 0}}}


def _write_log(path: Path) -> Path:
    stage = {"Stage ID": 3, "Stage Attempt ID": 0, "Stage Name": "count at model.py:42",
             "Number of Tasks": 2, "Submission Time": 1_000_000_000}
    events = [
        {"Event": "SparkListenerApplicationStart", "App Name": "t", "Timestamp": 999_999_000},
        {"Event": "SparkListenerJobStart", "Job ID": 7, "Submission Time": 999_999_900,
         "Stage Infos": [stage], "Stage IDs": [2, 3],
         "Properties": {"spark.job.description": "fit the factors"}},
        {"Event": "SparkListenerStageSubmitted", "Stage Info": stage,
         "Properties": {"spark.sql.execution.id": "4"}},
        _task_end(3_000, 2_500_000_000, 1 << 30, 5 << 20),
        _task_end(5_000, 4_000_000_000, 1 << 29, 9 << 20),
        {"Event": "SparkListenerStageCompleted",
         "Stage Info": {**stage, "Completion Time": 1_000_012_500}},
    ]
    lines = [json.dumps(event) for event in events]
    lines.append(json.dumps(_task_end(1, 1, 1, 1))[:70])  # cut while being written
    path.write_text("\n".join(lines))
    return path


def test_a_stage_sums_its_tasks_and_the_cut_last_line_is_skipped(tmp_path):
    notes = []
    log = _write_log(tmp_path / "local-1.inprogress")
    summary = event_log.summarize(event_log.read_events(log, notes))
    [row] = summary["stages"]
    assert (row["stage_id"], row["tasks"], row["status"]) == (3, 2, "complete")
    assert row["wall_s"] == 12.5
    assert (row["run_s"], row["cpu_s"], row["gc_s"]) == (8.0, 6.5, 0.5)
    assert row["memory_spilled"] == (1 << 30) + (1 << 29)
    assert row["disk_spilled"] == ((1 << 30) + (1 << 29)) // 4
    assert (row["shuffle_read_bytes"], row["shuffle_read_records"]) == (2000, 100)
    assert (row["shuffle_write_bytes"], row["shuffle_write_records"]) == (4096, 40)
    assert row["peak_execution_memory"] == 9 << 20
    assert (row["job_id"], row["job_description"], row["sql_id"]) == (7, "fit the factors", 4)
    assert summary["executors"]["driver"]["JVMHeapMemory"] == 36 << 20
    assert len(notes) == 1 and "last line 7" in notes[0]


def test_the_command_prints_the_tables_and_writes_the_rows(tmp_path, capsys):
    log = _write_log(tmp_path / "local-1.inprogress")
    assert event_log.main([str(log), "--top", "1", "--jobs", "--json",
                           str(tmp_path / "stages.json")]) == 0
    out = capsys.readouterr().out
    assert "top 1 stages by wall time" in out and "fit the factors" in out
    assert "spilled: memory 1.5 GB, disk 384.0 MB" in out
    rows = json.loads((tmp_path / "stages.json").read_text())
    assert [(r["stage_id"], r["wall_s"]) for r in rows] == [(3, 12.5)]
