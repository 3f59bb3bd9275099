"""Ingestion: raw Netflix Prize or MovieLens files -> Delta tables, every line accounted for.

Tables under the lake root: ``ratings``, ``movies``, ``probe``, ``qualifying``, ``quarantine``
(every rejected line with file, line number and reason), ``ingest_files`` (one row per source
file: its location, size, fingerprint, and how its lines were accounted for) and
``ingest_commits`` (the publish point: see :mod:`prizeflow.snapshots`).

A file is known by its name under the source root (:mod:`prizeflow.sources`): a local file whose
bytes are unchanged (same SHA-256) is skipped wherever the corpus now lives; a file listed by
Spark is skipped while its size and modification time are unchanged, and one read again whose
lines are the lines the lake holds (:func:`lines_fingerprint`) writes only its manifest row.
New or changed files replace their earlier rows. A file the manifest knows but the source no
longer holds is named in the summary, and its rows are removed only with
``ingest.remove_missing``. Every check runs
before the first write, and readers see the tables only as the last complete ingest left them.
The formats are declared in :mod:`prizeflow.formats`; ``prizeflow ingest``
(:func:`prizeflow.pipeline.ingest`, listed in :mod:`prizeflow.steps`) runs :func:`ingest`.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from types import SimpleNamespace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import formats, lake, parse, snapshots, unchanged
from prizeflow.columns import LINE_NO, SOURCE_FILE
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.lines import locate_lines
from prizeflow.lock import Held, ingest_lock
from prizeflow.secrets import redact_text
from prizeflow.sources import (SourceError, SourceFile, SourcePlan, discover, listed_by_spark,
                               spark_readable)
from prizeflow.sessions import is_connect
from prizeflow.spark import remote_url

logger = logging.getLogger(__name__)


def find_source(source: str, fmt: str = "auto", spark: SparkSession | None = None,
                follow_external_links: bool = False) -> SourcePlan:
    """The files to ingest under ``source``, listed by ``spark`` (None: on this machine's disk);
    a JobError that says why when there are none."""
    try:
        return discover(source, fmt, spark, follow_external_links)
    except SourceError as exc:
        raise JobError(str(exc)) from exc


def check_source(config: Config, source: str, fmt: str = "auto") -> None:
    """Before Spark starts: a source on this machine's disk must hold a corpus (others are
    listed once Spark is up)."""
    if not listed_by_spark(source, remote_url(config) is not None):
        find_source(source, fmt, follow_external_links=config.ingest.follow_external_links)


def summary_without_spark(config: Config, source: str, fmt: str = "auto") -> dict[str, Any] | None:
    """The summary of an ingest that would change nothing, found without starting Spark
    (:mod:`prizeflow.unchanged`); None when Spark must look (something may have changed, or
    the lake or the source is not on this machine's disk)."""
    if listed_by_spark(source, remote_url(config) is not None):
        return None
    plan = find_source(source, fmt, None, config.ingest.follow_external_links)
    found = unchanged.unchanged_since_record(config, plan)
    if found is None:
        return None
    manifest, published = found
    logger.info("%s source: %d file(s), none new or changed (checked without Spark against "
                "ingest %s)", plan.format, len(plan.files), published.ingest_id)
    return summary({}, plan, [], manifest, [], False, published)


def _record(spark: SparkSession, root: str, snapshot: snapshots.Snapshot | None, fmt: str,
            manifest: dict[str, Any]) -> None:
    """Leave the record a later no-op ingest reads instead of starting Spark (a lake on this
    machine's disk only)."""
    local = lake.local_path(spark, root)
    if local is not None and snapshot is not None:
        unchanged.record(local, snapshot, fmt, manifest)


def read_lines(spark: SparkSession, files: list[SourceFile]) -> DataFrame:
    """The raw text lines with the file (Spark's URL-encoded URI) and split each came from."""
    return spark.read.text([spark_readable(f.path) for f in files]).select(
        "value",
        F.col("_metadata.file_path").alias(SOURCE_FILE),
        F.col("_metadata.file_block_start").alias("block_start"),
    )


def _read_manifest(spark: SparkSession, manifest_path: str) -> dict[str, Any]:
    """The manifest, one row per source file ever ingested (a few thousand at most), by name."""
    if not lake.is_table(spark, manifest_path):
        return {}
    table = lake.read(spark, manifest_path)
    if "fingerprint" not in table.columns:
        raise JobError(f"the manifest {manifest_path} was written by an earlier prizeflow, which "
                       "knew files by their absolute location: ingest into a new lake.root")
    return {r.source_file: r for r in table.collect()}


def _unchanged(f: SourceFile, seen) -> bool:
    if seen is None or seen.target != f.table:
        return False
    if f.fingerprint is not None:  # a local file: its bytes decide
        return seen.fingerprint == f.fingerprint
    return (seen.size, seen.modified) == (f.size, f.modified)


def _files_to_ingest(plan: SourcePlan, manifest: dict[str, Any]) -> list[SourceFile]:
    return [f for f in plan.files if not _unchanged(f, manifest.get(f.name))]


def _missing(plan: SourcePlan, manifest: dict[str, Any]) -> list[str]:
    """Files the manifest knows that the source no longer holds."""
    return sorted(set(manifest) - {f.name for f in plan.files})


def _table_counts(manifest: dict[str, Any], tally: dict[str, dict[str, Any]],
                  replaced: set[str]) -> dict[str, int]:
    """Rows per data table after this run, from the manifest (the rows each file put there),
    without scanning a table: the files this run did not touch, plus what it wrote."""
    counts = dict.fromkeys(lake.DATA_TABLES, 0)
    for name, row in manifest.items():
        if name not in replaced and row.target in counts:
            counts[row.target] += int(row.rows)
    for entry in tally.values():
        counts[entry["target"]] += entry["rows"]
    return counts


def _check_format(spark: SparkSession, ratings_path: str, fmt: str) -> None:
    if lake.is_table(spark, ratings_path):
        held = lake.properties(spark, ratings_path).get("prizeflow.format")
        if held and held != fmt:
            raise JobError(f"the lake at {ratings_path} holds {held} ratings; "
                           f"ingest {fmt} data into another lake.root")


def date_limits(config: Config, today: date | None = None) -> tuple[date, date]:
    """The dates a rating may carry: ``ingest.earliest_date`` to ``ingest.latest_date`` (null:
    the day after the ingest runs, UTC, so a rating made today anywhere on Earth passes)."""
    today = today or datetime.now(timezone.utc).date()
    latest = config.ingest.latest_date or today + timedelta(days=1)
    return config.ingest.earliest_date, latest


# Source text per partition of the repeated-key count: about 1.7M Netflix rating lines.
KEY_COUNT_BYTES_PER_PARTITION = 32 * 1024 * 1024


def _key_partitions(spark: SparkSession, files: list[SourceFile]) -> int:
    """Partitions for counting the keys of ``files``: by their size, never fewer than the
    session's shuffle partitions (a fixed count spills on a large corpus: 8 spilled 6.9 GB at
    100M)."""
    by_size = -(-sum(f.size or 0 for f in files) // KEY_COUNT_BYTES_PER_PARTITION)
    setting = spark.conf.get("spark.sql.shuffle.partitions")
    # Databricks also takes "auto" there: then the size decides alone.
    return max(int(setting), by_size) if setting.isdigit() else max(1, by_size)


def _parse_table(spark: SparkSession, fmt: str, table: str, files: list[SourceFile],
                 table_path: str, replaced: set[str], dates: tuple[date, date],
                 fingerprint_lines: bool, manifest: dict[str, Any],
                 cached: list[DataFrame]) -> tuple[DataFrame, set[str]]:
    """The files' lines parsed and de-duplicated, and the names of the files among them read
    again with the very lines the lake holds for them (:func:`_same_lines`), whose rows are left
    out: the table's rows of those files stay, and count as existing keys. What it caches is
    appended to ``cached``.

    A table row's text is not kept (it is most of the cache's size): a row found a duplicate
    gets its text back before anything is written (:func:`recover_duplicate_text`). With
    ``fingerprint_lines`` each line's hash is kept instead, for :func:`lines_fingerprint`."""
    kind = formats.FORMATS[fmt].kind(table)
    parsed = parse.check_dates(kind.parser(_located(spark, fmt, table, files)), *dates)
    if fingerprint_lines:
        parsed = parsed.withColumn(LINE_HASH, F.xxhash64(LINE_NO, "line"))
    parsed = parsed.withColumn("line", F.when(F.col("outcome") != parse.ROW, F.col("line")))
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(parsed)
    kept = _same_lines(parsed, files, manifest) if fingerprint_lines else set()
    if kept:
        parsed = parsed.where(~F.col(SOURCE_FILE).isin(sorted(kept)))
        replaced = replaced - kept
    repeated = parse.repeated_keys(parsed, table, _key_partitions(spark, files))
    repeated = repeated.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(repeated)
    first = None
    if repeated.count():  # materialised, its real size lets the planner broadcast it
        first = parse.first_places(parsed, table, repeated).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(first)
        first.count()
    existing = None
    if lake.is_table(spark, table_path):
        # Rows of the files being replaced (re-read or removed) do not count.
        existing = (lake.read(spark, table_path)
                    .where(~F.col(SOURCE_FILE).isin(sorted(replaced)))
                    .select(*parse.TABLE_KEYS[table]))
    return parse.flag_duplicates(parsed, table, first, existing), kept


def _same_lines(parsed: DataFrame, files: list[SourceFile], manifest: dict[str, Any]) -> set[str]:
    """Of ``files``, those listed by Spark that were read again (a new size or time: a copy, a
    move, a re-upload) whose lines are the very lines the lake holds for them: nothing of theirs
    is written again, only their manifest row (so the next run skips them without reading).
    One small job, and only when the manifest knows such a file."""
    known = {f.name for f in files if f.fingerprint is None and f.name in manifest
             and manifest[f.name].target == f.table}
    if not known:
        return set()
    lines = (parsed.where(F.col(SOURCE_FILE).isin(sorted(known)))
             .groupBy(SOURCE_FILE).agg(F.count(F.lit(1)).alias("lines"),
                                       F.bit_xor(LINE_HASH).alias("digest")))
    now = {r.source_file: lines_fingerprint(int(r.digest), r.lines) for r in lines.collect()}
    return {name for name in known if manifest[name].fingerprint == now.get(name, NO_LINES)}


def _located(spark: SparkSession, fmt: str, table: str, files: list[SourceFile]) -> DataFrame:
    """The files' text lines, each with its file's name, its line number and its header."""
    kind = formats.FORMATS[fmt].kind(table)
    names = spark.createDataFrame([(f.path, f.name) for f in files], "location string, name string")
    return locate_lines(read_lines(spark, files), kind.with_headers, names)


def recover_duplicate_text(spark: SparkSession, fmt: str, table: str, parsed: DataFrame,
                           todo: list[SourceFile], tally: dict[str, dict[str, Any]],
                           dates: tuple[date, date], cached: list[DataFrame]) -> DataFrame:
    """The quarantined lines of ``parsed``, each with its text: a duplicate row's text (not
    cached with the table rows) is read again from its file, before anything is written.

    Only the files holding duplicates are read again (a corpus without any never pays this),
    and each line read again is parsed again: a line that is gone or parses to other values
    means the file changed while the ingest read it, a JobError naming it. The duplicates are
    persisted and counted first, so the planner broadcasts them when they are few (nearly
    always) instead of shuffling whole files; the result is persisted, so the quarantine's
    write reads nothing again."""
    quarantined = parsed.where(F.col("outcome") == parse.QUARANTINED)
    files = [f for f in todo if f.table == table
             and "duplicate" in tally.get(f.name, {}).get("reasons", {})]
    if not files:
        return quarantined
    data = [name for name, _ in parse.TABLE_COLUMNS[table]]
    missing = quarantined.where(F.col("line").isNull()).persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(missing)
    expected = missing.count()
    kind = formats.FORMATS[fmt].kind(table)
    again = (parse.check_dates(kind.parser(_located(spark, fmt, table, files)), *dates)
             .select(SOURCE_FILE, LINE_NO, F.col("outcome").alias("_outcome_again"),
                     F.col("line").alias("_text"), *[F.col(c).alias(f"_again_{c}") for c in data]))
    same = F.col("_outcome_again") == parse.ROW
    for column in data:
        same = same & F.col(column).eqNullSafe(F.col(f"_again_{column}"))
    found = (again.join(missing, [SOURCE_FILE, LINE_NO])
             .withColumn("_same", same)
             .persist(StorageLevel.MEMORY_AND_DISK))
    cached.append(found)
    changed = found.where(~F.col("_same")).select(SOURCE_FILE, LINE_NO).first()
    if changed is None and found.count() != expected:
        changed = missing.join(found, [SOURCE_FILE, LINE_NO], "left_anti").select(
            SOURCE_FILE, LINE_NO).first()
    if changed is not None:
        raise JobError(f"{changed.source_file} changed while it was read: its line "
                       f"{changed.line_no} is not the line parsed before; nothing was written, "
                       f"ingest again once the file is complete")
    recovered = found.withColumn("line", F.col("_text")).select(*parsed.columns)
    return quarantined.where(F.col("line").isNotNull()).unionByName(recovered)


def lines_fingerprint(digest: int, lines: int) -> str:
    """A file's content as Spark read it: the XOR of a 64-bit hash of each (line number, text)
    and the number of lines (order-free, so it adds up across splits and tasks)."""
    return f"lines-xxh64:{digest & 0xFFFFFFFFFFFFFFFF:016x}:{lines}"


NO_LINES = lines_fingerprint(0, 0)  # an emptied file: read, no line
LINE_HASH = "_line_hash"  # xxhash64(line number, text) of each line, for the fingerprint


def _tally(parsed: dict[str, DataFrame], fingerprint_lines: bool) -> dict[str, dict[str, Any]]:
    """Per source file: lines by outcome, quarantine reasons and, with ``fingerprint_lines`` (for
    files Spark listed, which have no byte hash), a fingerprint of its lines
    (:func:`lines_fingerprint`); one Spark job for all tables."""
    outcomes = None
    for table, df in parsed.items():
        line_hash = F.col(LINE_HASH) if fingerprint_lines else F.lit(0).cast("bigint")
        part = df.select(F.lit(table).alias("target"), SOURCE_FILE, "outcome", "reason",
                         line_hash.alias("_hash"))
        outcomes = part if outcomes is None else outcomes.unionByName(part)
    per_file: dict[str, dict[str, Any]] = {}
    grouped = outcomes.groupBy("target", SOURCE_FILE, "outcome", "reason").agg(
        F.count(F.lit(1)).alias("count"), F.bit_xor("_hash").alias("digest"))
    for row in grouped.collect():
        entry = per_file.setdefault(row.source_file, {
            "target": row.target, "lines_read": 0, "header_lines": 0, "rows": 0,
            "quarantined": 0, "skipped": 0, "reasons": {}, "digest": 0})
        entry["digest"] ^= int(row.digest)
        entry["lines_read"] += row["count"]
        key = {parse.ROW: "rows", parse.HEADER: "header_lines", parse.SKIPPED: "skipped",
               parse.QUARANTINED: "quarantined"}[row.outcome]
        entry[key] += row["count"]
        if row.reason:
            entry["reasons"][row.reason] = entry["reasons"].get(row.reason, 0) + row["count"]
    for entry in per_file.values():
        digest = entry.pop("digest")
        if fingerprint_lines:
            entry["fingerprint"] = lines_fingerprint(digest, entry["lines_read"])
    return per_file


def _validate(parsed: dict[str, DataFrame], tally: dict[str, dict[str, Any]],
              max_fraction: float) -> None:
    for bad, message in (("undecodable", "undecodable text (not valid UTF-8)"),
                         ("unlocated", "lines that could not be placed in their file")):
        if any(bad in entry["reasons"] for entry in tally.values()):
            example = None
            for df in parsed.values():
                example = df.where(F.col("reason") == bad).select(SOURCE_FILE, LINE_NO).first()
                if example is not None:
                    break
            where = f"{example.source_file}, line {example.line_no}" if example else "?"
            raise JobError(f"{message} in {where}; nothing was written")
    lines = sum(e["lines_read"] for e in tally.values())
    quarantined = sum(e["quarantined"] for e in tally.values())
    if lines and quarantined / lines > max_fraction:
        reasons: dict[str, int] = {}
        for entry in tally.values():
            for reason, count in entry["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        top = ", ".join(f"{r}={c}" for r, c in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
        raise JobError(f"{quarantined} of {lines} lines ({quarantined / lines:.2%}) would be "
                       f"quarantined, above ingest.max_quarantine_fraction={max_fraction} "
                       f"({top}); nothing was written")


def _manifest_rows(plan: SourcePlan, files: list[SourceFile], tally: dict[str, dict[str, Any]],
                   ingest_id: str, now: datetime) -> list[tuple]:
    """The manifest's rows for ``files``, in ``lake.MANIFEST_COLUMNS`` order."""
    empty = {"lines_read": 0, "header_lines": 0, "rows": 0, "quarantined": 0, "skipped": 0}
    rows = []
    for f in files:
        entry = tally.get(f.name) or empty  # an emptied file has no lines
        fingerprint = f.fingerprint or entry.get("fingerprint") or NO_LINES
        rows.append((f.name, f.table, plan.format, redact_text(f.path), f.size, f.modified,
                     fingerprint, entry["lines_read"], entry["header_lines"], entry["rows"],
                     entry["quarantined"], entry["skipped"], ingest_id, now))
    return rows


def summary(tally: dict[str, dict[str, Any]], plan: SourcePlan, todo: list[SourceFile],
             manifest: dict[str, Any], missing: list[str], removed: bool,
             snapshot: snapshots.Snapshot | None, reread_unchanged: int = 0) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for entry in tally.values():
        for reason, count in entry["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    replaced = {f.name for f in todo} | (set(missing) if removed else set())
    counts = _table_counts(manifest, tally, replaced)
    return {
        "format": plan.format,
        # True when no table row was written or removed (the manifest may still be updated).
        "nothing_ingested": not todo and not removed,
        "files_ingested": len(todo),
        "files_unchanged": len(plan.files) - len(todo),
        # Of those, listed by Spark with a new size or time but the same lines: read, not written.
        "files_reread_unchanged": reread_unchanged,
        "files_ignored": len(plan.ignored),
        # Known from an earlier ingest, gone from the source: kept unless ingest.remove_missing.
        "files_missing": len(missing),
        "missing_files": missing[:20],
        "files_removed": len(missing) if removed else 0,
        "lines_read": sum(e["lines_read"] for e in tally.values()),
        "header_lines": sum(e["header_lines"] for e in tally.values()),
        "blank_lines_skipped": sum(e["skipped"] for e in tally.values()),
        **counts,
        "quarantined": sum(e["quarantined"] for e in tally.values()),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "ingest_id": snapshot.ingest_id if snapshot else None,
        "delta_versions": dict(snapshot.versions) if snapshot else {},
    }


def ingest(spark: SparkSession, config: Config, source: str,
           fmt: str = "auto") -> dict[str, Any]:
    """Ingest the corpus under ``source`` (``fmt``: one of :data:`prizeflow.formats.CHOICES`)
    into the lake at ``lake.root``; the run's summary."""
    plan = find_source(source, fmt,
                       spark if listed_by_spark(source, is_connect(spark)) else None,
                       config.ingest.follow_external_links)
    with ingest_lock(spark, config) as held:
        return _ingest_locked(spark, config, plan, held)


def _ingest_locked(spark: SparkSession, config: Config, plan: SourcePlan,
                   held: Held) -> dict[str, Any]:
    """The ingest proper, with the lake's ingest lock held: what it de-duplicates against is
    what the tables hold when it writes."""
    root = config.lake.root
    paths = {t: lake.table_path(root, t) for t in snapshots.INGESTED}
    _check_format(spark, paths["ratings"], plan.format)
    published = snapshots.latest(spark, root)
    snapshots.roll_back_unpublished(spark, root, published)
    manifest = _read_manifest(spark, paths["ingest_files"])
    todo = _files_to_ingest(plan, manifest)
    missing = _missing(plan, manifest)
    remove = bool(missing) and config.ingest.remove_missing
    logger.info("%s source: %d file(s), %d new or changed", plan.format, len(plan.files), len(todo))
    if missing:
        logger.warning("%d file(s) ingested earlier are not in the source any more (%s%s): their "
                       "rows are %s", len(missing), ", ".join(missing[:5]),
                       " ..." if len(missing) > 5 else "",
                       "removed now" if remove else "kept (set ingest.remove_missing to remove "
                       "them)")
    if not todo and not remove:
        if not missing:
            _record(spark, root, published, plan.format, manifest)
        return summary({}, plan, todo, manifest, missing, False, published)

    replaced = {f.name for f in todo} | (set(missing) if remove else set())
    parsed: dict[str, DataFrame] = {}
    cached: list[DataFrame] = []
    kept_names: set[str] = set()
    dates = date_limits(config)
    fingerprint_lines = any(f.fingerprint is None for f in todo)
    try:
        for table in lake.DATA_TABLES:
            files = [f for f in todo if f.table == table]
            if files:
                parsed[table], same = _parse_table(
                    spark, plan.format, table, files, paths[table], replaced, dates,
                    fingerprint_lines, manifest, cached)
                kept_names |= same
        kept = [f for f in todo if f.name in kept_names]
        if kept:
            logger.info("%d file(s) read again hold the same lines as before: only their "
                        "manifest rows are updated", len(kept))
            todo = [f for f in todo if f.name not in kept_names]
        tally = _tally(parsed, fingerprint_lines) if parsed else {}
        _validate(parsed, tally, float(config.ingest.max_quarantine_fraction))
        quarantined = {t: recover_duplicate_text(spark, plan.format, t, df, todo, tally, dates,
                                                 cached)
                       for t, df in parsed.items()}
        removed = {name: manifest[name].target for name in missing} if remove else {}
        ingest_id = uuid.uuid4().hex
        after = _write(spark, paths, plan, todo, parsed, quarantined, tally, removed, held,
                       ingest_id, {f.name: f for f in kept}, manifest)
        held.check()
        snapshot = snapshots.publish(spark, root, ingest_id, plan.format, published)
        _after_commit(snapshots.TABLE)
        _record(spark, root, snapshot, plan.format, after)
    finally:
        for df in cached:
            df.unpersist()
    return summary(tally, plan, todo, manifest, missing, remove, snapshot, len(kept))


# Fault injection for the crash tests only: the process kills itself (SIGKILL, like `kill -9`)
# right after the named table's commit. Never set outside tests.
FAULT_ENV = "PRIZEFLOW_TEST_KILL_AFTER_COMMIT"


def _after_commit(table: str) -> None:
    if os.environ.get(FAULT_ENV) == table:
        logger.warning("test fault: killing this process after the %s commit", table)
        os.kill(os.getpid(), signal.SIGKILL)


def _write(spark: SparkSession, paths: dict[str, str], plan: SourcePlan, todo: list[SourceFile],
           parsed: dict[str, DataFrame], quarantined_lines: dict[str, DataFrame],
           tally: dict[str, dict[str, Any]],
           removed: dict[str, str], held: Held, ingest_id: str,
           kept: dict[str, SourceFile], manifest: dict[str, Any]) -> dict[str, Any]:
    """Each table's rows, then the quarantine, then the manifest: one commit per table, each
    replacing whatever rows the files of this run (and the removed ones) had there before;
    ``kept`` files (read again, the same lines) only get their manifest rows updated.
    Nothing is visible to readers until :func:`prizeflow.snapshots.publish`. Returns the
    manifest as it now stands, by name (the rows it did not replace and the rows it wrote)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    scale = formats.FORMATS[plan.format].scale
    run_columns = [F.lit(ingest_id).alias("ingest_id"), F.lit(now).alias("ingested_at")]
    quarantine_parts = []
    for table in lake.DATA_TABLES:
        names = sorted({n for n, e in tally.items() if e["target"] == table}
                       | {f.name for f in todo if f.table == table}
                       | {n for n, target in removed.items() if target == table})
        if not names:
            continue
        spec = lake.data_table_spec(table, scale)
        held.check()
        if table in parsed:
            df = parsed[table]
            rows = df.where(F.col("outcome") == parse.ROW).select("*", *run_columns)
            quarantine_parts.append(
                quarantined_lines[table]
                .select(F.lit(table).alias("target"), SOURCE_FILE, LINE_NO,
                        F.left("line", F.lit(QUARANTINED_TEXT_CHARS)).alias("line"),
                        F.length("line").alias("line_length"), "reason", *run_columns))
        else:
            rows = lake.empty(spark, spec)  # only removals
        created = lake.ensure_table(spark, paths[table], spec, _table_properties(table, plan))
        lake.replace_files(spark, rows, paths[table], spec, names, fresh=created)
        logger.info("wrote %s", table)
        _after_commit(table)
    every_file = sorted(set(tally) | {f.name for f in todo} | set(removed))
    if every_file:
        held.check()
        created = lake.ensure_table(spark, paths["quarantine"], lake.QUARANTINE)
        quarantine = lake.empty(spark, lake.QUARANTINE)
        for part in quarantine_parts:
            quarantine = quarantine.unionByName(lake.conform(part, lake.QUARANTINE))
        lake.replace_files(spark, quarantine, paths["quarantine"], lake.QUARANTINE, every_file,
                           fresh=created)
        _after_commit("quarantine")
    held.check()
    # A kept file's row keeps the counts of the read that wrote its rows, at its new place.
    kept_counts = {name: {k: manifest[name][k] for k in (
        "lines_read", "header_lines", "rows", "quarantined", "skipped", "fingerprint")}
        for name in kept}
    created = lake.ensure_table(spark, paths["ingest_files"], lake.MANIFEST)
    rows = _manifest_rows(plan, todo + list(kept.values()), {**tally, **kept_counts}, ingest_id,
                          now)
    replaced = set(every_file) | set(kept)
    schema = ", ".join(f"{n} {t}" for n, t in lake.MANIFEST_COLUMNS)
    lake.replace_files(spark, spark.createDataFrame(rows, schema), paths["ingest_files"],
                       lake.MANIFEST, sorted(replaced), fresh=created)
    _after_commit("ingest_files")
    names = [name for name, _ in lake.MANIFEST_COLUMNS]
    return {**{name: row for name, row in manifest.items() if name not in replaced},
            **{row[0]: SimpleNamespace(**dict(zip(names, row))) for row in rows}}


# Quarantined lines keep this many characters of their text (and their full length): a
# malformed file of one huge line must not copy itself into the quarantine table.
QUARANTINED_TEXT_CHARS = 1024


def _table_properties(table: str, plan: SourcePlan) -> dict[str, str]:
    scale = formats.FORMATS[plan.format].scale
    # File statistics only on the data columns: lineage columns are not queried by range.
    props = {"prizeflow.format": plan.format,
             "delta.dataSkippingNumIndexedCols": str(len(parse.TABLE_COLUMNS[table]))}
    if table == "ratings":
        props.update({"prizeflow.rating_low": str(scale.low),
                      "prizeflow.rating_high": str(scale.high),
                      "prizeflow.rating_step": str(scale.step)})
    return props
