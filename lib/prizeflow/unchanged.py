"""An ingest with nothing new, answered without Spark.

After each ingest into a lake on this machine's disk, the ingest writes a record beside the
tables (``_prizeflow_ingest.json``): the published snapshot (its ingest id and each table's
Delta version) and the manifest's rows (each source file's name, table, fingerprint and rows).
``prizeflow ingest`` first takes the lake's ingest lock (the same file lock the ingest takes)
and compares, before any JVM starts:

- every ingested table and ``ingest_commits`` is still at the recorded version (the newest
  commit file in its ``_delta_log``): no other writer, no ingest that died between its commits;
- the source holds exactly the recorded files, each local with the recorded SHA-256, in the
  recorded format.

Then nothing would be ingested: the summary comes from the record and Spark never starts.
Anything else (no record, a later commit, a new, changed or missing file, a lake or a source
that only Spark can list) goes the whole way, which writes the record again. The record is a
cache of what the Delta tables say, never the truth: it is used only while the tables' own
logs agree with it, and it is replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prizeflow import lake, snapshots
from prizeflow.config import Config
from prizeflow.lock import LOCK_FILE, file_lock
from prizeflow.private_files import write_whole
from prizeflow.sources import SourcePlan

logger = logging.getLogger(__name__)

RECORD = "_prizeflow_ingest.json"
RECORD_VERSION = 1
TABLES = snapshots.INGESTED + (snapshots.TABLE,)
_COMMIT = re.compile(r"^(\d{20})\.json$")


def delta_version(table: Path) -> int | None:
    """The newest committed version of the Delta table in folder ``table`` (None: no table)."""
    try:
        names = os.listdir(table / "_delta_log")
    except FileNotFoundError:
        return None
    versions = [int(m.group(1)) for m in map(_COMMIT.match, names) if m]
    return max(versions) if versions else None


def record(local: Path, snapshot: snapshots.Snapshot, fmt: str,
           manifest: dict[str, Any]) -> None:
    """Write the record of ``snapshot`` (the lake's last complete ingest, just published or just
    confirmed) with the ingest lock held; removed instead when the tables' logs do not agree."""
    path = local / RECORD
    versions = {t: delta_version(local / t) for t in TABLES}
    if any(versions[t] != snapshot.version(t) for t in snapshots.INGESTED):
        path.unlink(missing_ok=True)
        logger.debug("no ingest record: the tables' versions %s are not the snapshot's %s",
                     versions, snapshot.versions)
        return
    files = {name: {"target": row.target, "fingerprint": row.fingerprint, "rows": int(row.rows)}
             for name, row in manifest.items()}
    content = {"record": RECORD_VERSION, "seq": snapshot.seq, "ingest_id": snapshot.ingest_id,
               "committed_at": snapshot.committed_at.isoformat(), "format": fmt,
               "versions": versions, "files": files}
    try:
        write_whole(path, json.dumps(content).encode("utf-8"))
    except OSError:
        logger.warning("could not write the ingest record %s: the next ingest starts Spark to "
                       "check for changes", path, exc_info=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and content.get("record") == RECORD_VERSION \
        else None


def _why_not(content: dict[str, Any], local: Path, plan: SourcePlan) -> str | None:
    """Why the record does not answer for ``plan`` (None: it does)."""
    for table in TABLES:
        if delta_version(local / table) != content["versions"].get(table):
            return f"table {table} has a commit the record does not know"
    if plan.format != content["format"]:
        return f"the source is {plan.format}, the lake {content['format']}"
    files = content["files"]
    if {f.name for f in plan.files} != set(files):
        return "the source's files are not the ingested ones"
    for f in plan.files:
        known = files[f.name]
        if f.fingerprint is None or (f.table, f.fingerprint) != (known["target"],
                                                                known["fingerprint"]):
            return f"{f.name} is new or changed"
    return None


def unchanged_since_record(config: Config,
                           plan: SourcePlan) -> tuple[dict[str, Any], snapshots.Snapshot] | None:
    """(the manifest's rows, the last complete ingest) from the record, when nothing in
    ``plan`` (listed on this machine's disk) is new or changed since that ingest and the
    tables' logs agree with the record; else None. No Spark."""
    local = lake.local_root(config)
    if local is None or not (local / RECORD).is_file():
        return None
    with file_lock(local / LOCK_FILE, config.ingest.lock_wait_seconds,
                   f"lake {local} is being ingested", "ingest.lock_wait_seconds"):
        content = _read(local / RECORD)
        reason = "the record is unreadable" if content is None else _why_not(content, local,
                                                                            plan)
    if reason is not None:
        logger.info("change check without Spark: %s; checking with Spark", reason)
        return None
    manifest = {name: SimpleNamespace(**row) for name, row in content["files"].items()}
    snapshot = snapshots.Snapshot(content["seq"], content["ingest_id"],
                                  datetime.fromisoformat(content["committed_at"]),
                                  {t: content["versions"][t] for t in snapshots.INGESTED})
    return manifest, snapshot
