"""``prizeflow ingest``: raw Netflix Prize or MovieLens files -> Delta tables.

    prizeflow ingest --source PATH [--format auto|netflix|movielens] [--conf F] [--set k=v]
    spark-submit --packages io.delta:... jobs/ingest.py --source PATH ...

Tables under ``lake.root``: ``ratings``, ``movies``, ``probe``, ``qualifying``, ``quarantine``
(every rejected line with file, line number and reason) and ``ingest_files`` (one row per source
file: size, mtime, and how its lines were accounted for). Files already ingested with the same
size and mtime are skipped; new or changed files replace their earlier rows. Every check runs
before the first write, so a failed run leaves every table at its previous version.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow import lake, parse
from prizeflow.jobs.common import JobError, make_parser, run_job
from prizeflow.lines import locate_lines
from prizeflow.sources import SourceError, SourceFile, SourcePlan, discover

logger = logging.getLogger(__name__)

Parser = Callable[[DataFrame], DataFrame]
# (format, table) -> (parser, whether the file has MovieID: headers)
PARSERS: dict[tuple[str, str], tuple[Parser, bool]] = {
    ("netflix", "ratings"): (parse.parse_netflix_ratings, True),
    ("netflix", "movies"): (parse.parse_netflix_titles, False),
    ("netflix", "probe"): (parse.parse_netflix_probe, True),
    ("netflix", "qualifying"): (parse.parse_netflix_qualifying, True),
    ("ml-100k", "ratings"): (parse.parse_ml100k_ratings, False),
    ("ml-100k", "movies"): (parse.parse_ml100k_items, False),
    ("ml-dat", "ratings"): (parse.parse_mldat_ratings, False),
    ("ml-dat", "movies"): (parse.parse_mldat_movies, False),
    ("ml-csv", "ratings"): (parse.parse_mlcsv_ratings, False),
    ("ml-csv", "movies"): (parse.parse_mlcsv_movies, False),
}
SCALES = {"netflix": parse.NETFLIX_SCALE, "ml-100k": parse.ML_INTEGER_SCALE,
          "ml-dat": parse.ML_HALF_STAR_SCALE, "ml-csv": parse.ML_HALF_STAR_SCALE}


# `--format` values: auto-detection, a family, or one exact layout.
FORMATS = ("auto", "netflix", "movielens", "ml-100k", "ml-dat", "ml-csv")


def add_source_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--source`` and ``--format``, shared by every command that ingests."""
    parser.add_argument("--source", required=True, help="folder (or file) holding the corpus")
    parser.add_argument("--format", default="auto",
                        choices=FORMATS)
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_source_arguments(
        make_parser("ingest", "Ingest Netflix Prize or MovieLens files into Delta tables."))


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


def _files_to_ingest(spark: SparkSession, plan: SourcePlan, manifest_path: str) -> list[SourceFile]:
    if not lake.is_table(spark, manifest_path):
        return plan.files
    seen = {_local(r.source_file): (r.size, r.modified) for r in
            spark.read.format("delta").load(manifest_path)
            .select("source_file", "size", "modified").collect()}
    return [f for f in plan.files if seen.get(_local(f.path)) != (f.size, f.modified)]


def _check_format(spark: SparkSession, ratings_path: str, fmt: str) -> None:
    if lake.is_table(spark, ratings_path):
        held = lake.properties(spark, ratings_path).get("prizeflow.format")
        if held and held != fmt:
            raise JobError(f"the lake at {ratings_path} holds {held} ratings; "
                           f"ingest {fmt} data into another lake.root")


def _parse_table(spark: SparkSession, fmt: str, table: str, files: list[SourceFile],
                 table_path: str, cached: list[DataFrame]) -> DataFrame:
    """The files' lines parsed and de-duplicated; what it caches is appended to ``cached``."""
    parser, with_headers = PARSERS[(fmt, table)]
    parsed = parser(locate_lines(read_lines(spark, [f.path for f in files]), with_headers))
    # The raw text stays on every row: a clean-looking row may still turn out a duplicate.
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    repeated = parse.duplicate_keys(parsed, table).persist(StorageLevel.MEMORY_AND_DISK)
    cached += [parsed, repeated]
    repeated.count()  # materialised, its real size lets the planner broadcast it
    existing = None
    if lake.is_table(spark, table_path):
        # Rows of the files being (re)ingested are about to be replaced: they do not count.
        batch = [f.path for f in files]
        existing = (spark.read.format("delta").load(table_path)
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
             plan: SourcePlan, todo: list[SourceFile]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for entry in tally.values():
        for reason, count in entry["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    counts = {}
    for table in lake.DATA_TABLES:
        path = lake.table_path(root, table)
        counts[table] = (spark.read.format("delta").load(path).count()
                         if lake.is_table(spark, path) else 0)
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


def find_source(config: dict[str, Any], args: argparse.Namespace) -> SourcePlan:
    try:
        return discover(args.source, args.format)
    except SourceError as exc:
        raise JobError(str(exc)) from exc


def run(spark: SparkSession, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    plan = find_source(config, args)
    root = config["lake"]["root"]
    paths = {t: lake.table_path(root, t) for t in lake.DATA_TABLES + ("quarantine", "ingest_files")}
    _check_format(spark, paths["ratings"], plan.format)
    todo = _files_to_ingest(spark, plan, paths["ingest_files"])
    logger.info("%s source: %d file(s), %d new or changed", plan.format, len(plan.files), len(todo))
    if not todo:
        return _summary(spark, root, {}, plan, todo)

    ingest_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    parsed: dict[str, DataFrame] = {}
    cached: list[DataFrame] = []
    try:
        for table in lake.DATA_TABLES:
            files = [f for f in todo if f.table == table]
            if files:
                parsed[table] = _parse_table(spark, plan.format, table, files, paths[table], cached)
        tally = _tally(parsed)
        _validate(parsed, tally, float(config["ingest"]["max_quarantine_fraction"]))

        scale = SCALES[plan.format]
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
        every_file = sorted(set(tally) | {f.path for f in todo})
        created = lake.ensure_table(spark, paths["quarantine"], lake.QUARANTINE)
        quarantine = quarantine_parts[0]
        for part in quarantine_parts[1:]:
            quarantine = quarantine.unionByName(part)
        lake.replace_files(spark, quarantine, paths["quarantine"], lake.QUARANTINE, every_file,
                           fresh=created)
        created = lake.ensure_table(spark, paths["ingest_files"], lake.MANIFEST)
        lake.replace_files(spark, _manifest(spark, plan, todo, tally, ingest_id, now),
                           paths["ingest_files"], lake.MANIFEST, every_file, fresh=created)
    finally:
        for df in cached:
            df.unpersist()
    return _summary(spark, root, tally, plan, todo)


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", build_parser(), run, argv, precheck=find_source)


if __name__ == "__main__":
    sys.exit(main())
