"""Ingestion: raw Netflix Prize or MovieLens files -> Delta tables, every line accounted for.

Tables under the lake root: ``ratings``, ``movies``, ``probe``, ``qualifying``, ``quarantine``
(every rejected line with file, line number and reason) and ``ingest_files`` (one row per source
file: size, mtime, and how its lines were accounted for). Files already ingested with the same
size and mtime are skipped; new or changed files replace their earlier rows. Every check runs
before the first write, so a failed run leaves every table at its previous version. The formats
are declared in :mod:`prizeflow.formats`; ``prizeflow ingest`` (:mod:`prizeflow.jobs.ingest`)
is the command around :func:`ingest`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import formats, lake, parse
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.lines import locate_lines
from prizeflow.lock import ingest_lock
from prizeflow.sources import SourceError, SourceFile, SourcePlan, discover, listed_by_spark
from prizeflow.spark import is_connect, remote_url

logger = logging.getLogger(__name__)


def find_source(source: str, fmt: str = "auto", spark: SparkSession | None = None) -> SourcePlan:
    """The files to ingest under ``source``, listed by ``spark`` (None: on this machine's disk);
    a JobError that says why when there are none."""
    try:
        return discover(source, fmt, spark)
    except SourceError as exc:
        raise JobError(str(exc)) from exc


def check_source(config: Config, source: str, fmt: str = "auto") -> None:
    """Before Spark starts: a source on this machine's disk must hold a corpus (others are
    listed once Spark is up)."""
    if not listed_by_spark(source, remote_url(config) is not None):
        find_source(source, fmt)


def read_lines(spark: SparkSession, paths: list[str]) -> DataFrame:
    """The raw text lines with the file and split each came from."""
    return spark.read.text(paths).select(
        "value",
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block_start"),
    )


def _local(uri: str) -> str:
    """One spelling for a file whether it came from Spark (URL-encoded) or from discovery."""
    return unquote(uri)


def _read_manifest(spark: SparkSession, manifest_path: str) -> dict[str, Any]:
    """The manifest, one row per source file ever ingested (a few thousand at most), by file."""
    if not lake.is_table(spark, manifest_path):
        return {}
    return {_local(r.source_file): r for r in lake.read(spark, manifest_path)
            .select("source_file", "target", "size", "modified", "rows").collect()}


def _files_to_ingest(plan: SourcePlan, manifest: dict[str, Any]) -> list[SourceFile]:
    def unchanged(f: SourceFile) -> bool:
        seen = manifest.get(_local(f.path))
        return seen is not None and (seen.size, seen.modified) == (f.size, f.modified)

    return [f for f in plan.files if not unchanged(f)]


def _replaced_files(tally: dict[str, dict[str, Any]], todo: list[SourceFile]) -> list[str]:
    """Every file whose rows this run replaces: those it read lines from, and those it was
    given (an emptied file has no lines but still replaces its earlier rows)."""
    return sorted(set(tally) | {f.path for f in todo})


def _table_counts(manifest: dict[str, Any], tally: dict[str, dict[str, Any]],
                  replaced: list[str]) -> dict[str, int]:
    """Rows per data table after this run, from the manifest (the rows each file put there),
    without scanning a table: the files this run did not touch, plus what it wrote."""
    counts = dict.fromkeys(lake.DATA_TABLES, 0)
    gone = {_local(f) for f in replaced}
    for name, row in manifest.items():
        if name not in gone and row.target in counts:
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


def _parse_table(spark: SparkSession, fmt: str, table: str, files: list[SourceFile],
                 table_path: str, cached: list[DataFrame]) -> DataFrame:
    """The files' lines parsed and de-duplicated; what it caches is appended to ``cached``."""
    kind = formats.FORMATS[fmt].kind(table)
    parsed = kind.parser(locate_lines(read_lines(spark, [f.path for f in files]), kind.with_headers))
    # The raw text stays on every row: a clean-looking row may still turn out a duplicate.
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    repeated = parse.duplicate_keys(parsed, table).persist(StorageLevel.MEMORY_AND_DISK)
    cached += [parsed, repeated]
    repeated.count()  # materialised, its real size lets the planner broadcast it
    existing = None
    if lake.is_table(spark, table_path):
        # Rows of the files being (re)ingested are about to be replaced: they do not count.
        batch = [f.path for f in files]
        existing = (lake.read(spark, table_path)
                    .where(~F.col("source_file").isin(batch)).select(*parse.TABLE_KEYS[table]))
    return parse.flag_duplicates(parsed, table, repeated, existing)


def _tally(parsed: dict[str, DataFrame]) -> dict[str, dict[str, Any]]:
    """Per source file: lines by outcome and quarantine reasons (one Spark job for all tables)."""
    outcomes = None
    for table, df in parsed.items():
        part = df.select(F.lit(table).alias("target"), "source_file", "outcome", "reason")
        outcomes = part if outcomes is None else outcomes.unionByName(part)
    per_file: dict[str, dict[str, Any]] = {}
    for row in outcomes.groupBy("target", "source_file", "outcome", "reason").count().collect():
        entry = per_file.setdefault(row.source_file, {
            "target": row.target, "lines_read": 0, "header_lines": 0, "rows": 0,
            "quarantined": 0, "skipped": 0, "reasons": {}})
        entry["lines_read"] += row["count"]
        key = {parse.ROW: "rows", parse.HEADER: "header_lines", parse.SKIPPED: "skipped",
               parse.QUARANTINED: "quarantined"}[row.outcome]
        entry[key] += row["count"]
        if row.reason:
            entry["reasons"][row.reason] = entry["reasons"].get(row.reason, 0) + row["count"]
    return per_file


def _validate(parsed: dict[str, DataFrame], tally: dict[str, dict[str, Any]],
              max_fraction: float) -> None:
    for bad, message in (("undecodable", "undecodable text (not valid UTF-8)"),
                         ("unlocated", "lines that could not be placed in their file")):
        if any(bad in entry["reasons"] for entry in tally.values()):
            example = None
            for df in parsed.values():
                example = df.where(F.col("reason") == bad).select("source_file", "line_no").first()
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


def _manifest(spark: SparkSession, plan: SourcePlan, files: list[SourceFile],
              tally: dict[str, dict[str, Any]], ingest_id: str, now: datetime) -> DataFrame:
    by_local = {_local(name): (name, entry) for name, entry in tally.items()}
    rows = []
    for f in files:
        name, entry = by_local.get(_local(f.path), (f.path, None))
        entry = entry or {"lines_read": 0, "header_lines": 0, "rows": 0, "quarantined": 0,
                          "skipped": 0}
        rows.append((name, f.table, plan.format, f.size, f.modified, entry["lines_read"],
                     entry["header_lines"], entry["rows"], entry["quarantined"], entry["skipped"],
                     ingest_id, now))
    schema = ", ".join(f"{n} {t}" for n, t in lake.MANIFEST_COLUMNS)
    return spark.createDataFrame(rows, schema)


def _summary(spark: SparkSession, root: str, tally: dict[str, dict[str, Any]],
             plan: SourcePlan, todo: list[SourceFile], manifest: dict[str, Any]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for entry in tally.values():
        for reason, count in entry["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    counts = _table_counts(manifest, tally, _replaced_files(tally, todo))
    tables = lake.DATA_TABLES + ("quarantine", "ingest_files")
    return {
        "format": plan.format,
        "files_ingested": len(todo),
        "files_unchanged": len(plan.files) - len(todo),
        "files_ignored": len(plan.ignored),
        "lines_read": sum(e["lines_read"] for e in tally.values()),
        "header_lines": sum(e["header_lines"] for e in tally.values()),
        "blank_lines_skipped": sum(e["skipped"] for e in tally.values()),
        **counts,
        "quarantined": sum(e["quarantined"] for e in tally.values()),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "delta_versions": {t: lake.version(spark, lake.table_path(root, t)) for t in tables},
    }


def ingest(spark: SparkSession, config: Config, source: str,
           fmt: str = "auto") -> dict[str, Any]:
    """Ingest the corpus under ``source`` (``fmt``: one of :data:`prizeflow.formats.CHOICES`)
    into the lake at ``lake.root``; the run's summary."""
    plan = find_source(source, fmt,
                       spark if listed_by_spark(source, is_connect(spark)) else None)
    with ingest_lock(spark, config):
        return _ingest_locked(spark, config, plan)


def _ingest_locked(spark: SparkSession, config: Config, plan: SourcePlan) -> dict[str, Any]:
    """The ingest proper, with the lake's ingest lock held: what it de-duplicates against is
    what the tables hold when it writes."""
    root = config.lake.root
    paths = {t: lake.table_path(root, t) for t in lake.DATA_TABLES + ("quarantine", "ingest_files")}
    _check_format(spark, paths["ratings"], plan.format)
    manifest = _read_manifest(spark, paths["ingest_files"])
    todo = _files_to_ingest(plan, manifest)
    logger.info("%s source: %d file(s), %d new or changed", plan.format, len(plan.files), len(todo))
    if not todo:
        return _summary(spark, root, {}, plan, todo, manifest)

    parsed: dict[str, DataFrame] = {}
    cached: list[DataFrame] = []
    try:
        for table in lake.DATA_TABLES:
            files = [f for f in todo if f.table == table]
            if files:
                parsed[table] = _parse_table(spark, plan.format, table, files, paths[table], cached)
        tally = _tally(parsed)
        _validate(parsed, tally, float(config.ingest.max_quarantine_fraction))

        _write(spark, paths, plan, todo, parsed, tally)
    finally:
        for df in cached:
            df.unpersist()
    return _summary(spark, root, tally, plan, todo, manifest)


def _write(spark: SparkSession, paths: dict[str, str], plan: SourcePlan, todo: list[SourceFile],
           parsed: dict[str, DataFrame], tally: dict[str, dict[str, Any]]) -> None:
    """Each table's rows, then the quarantine, then the manifest: one commit per table, each
    replacing whatever rows the files of this run had there before."""
    ingest_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    scale = formats.FORMATS[plan.format].scale
    run_columns = [F.lit(ingest_id).alias("ingest_id"), F.lit(now).alias("ingested_at")]
    quarantine_parts = []
    for table, df in parsed.items():
        spec = lake.data_table_spec(table, scale)
        # File statistics only on the data columns: lineage columns are not queried by range.
        props = {"prizeflow.format": plan.format,
                 "delta.dataSkippingNumIndexedCols": str(len(parse.TABLE_COLUMNS[table]))}
        if table == "ratings":
            props.update({"prizeflow.rating_low": str(scale.low),
                          "prizeflow.rating_high": str(scale.high),
                          "prizeflow.rating_step": str(scale.step)})
        created = lake.ensure_table(spark, paths[table], spec, props)
        files = sorted({f for f in tally if tally[f]["target"] == table}
                       | {f.path for f in todo if f.table == table})
        rows = df.where(F.col("outcome") == parse.ROW).select("*", *run_columns)
        lake.replace_files(spark, rows, paths[table], spec, files, fresh=created)
        quarantine_parts.append(df.where(F.col("outcome") == parse.QUARANTINED)
                                .select(F.lit(table).alias("target"), "source_file", "line_no",
                                        "line", "reason", *run_columns))
        logger.info("wrote %s", table)
    every_file = _replaced_files(tally, todo)
    created = lake.ensure_table(spark, paths["quarantine"], lake.QUARANTINE)
    quarantine = quarantine_parts[0]
    for part in quarantine_parts[1:]:
        quarantine = quarantine.unionByName(part)
    lake.replace_files(spark, quarantine, paths["quarantine"], lake.QUARANTINE, every_file,
                       fresh=created)
    created = lake.ensure_table(spark, paths["ingest_files"], lake.MANIFEST)
    lake.replace_files(spark, _manifest(spark, plan, todo, tally, ingest_id, now),
                       paths["ingest_files"], lake.MANIFEST, every_file, fresh=created)
