"""Delta Lake tables under ``lake.root``: every table's schema and constraints, and the one way
each is read and written.

Tables: the data tables of an ingest (``ratings``, ``movies``, ``probe``, ``qualifying``: columns
from :mod:`prizeflow.parse` plus lineage), ``quarantine``, ``ingest_files`` (the per-file
manifest), ``ingest_commits`` (the publish point, :mod:`prizeflow.snapshots`) and
``recommendations``. The transformations never touch storage: the library's
pipelines (ingestion, training, scoring) read and write through here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow.columns import LINE_NO, MOVIE_ID, RATING, SOURCE_FILE, USER_ID
from prizeflow.errors import JobError
from prizeflow.parse import LINEAGE_COLUMNS, TABLE_COLUMNS, RatingScale
from prizeflow.sessions import is_connect
from prizeflow.spark import remote_url

logger = logging.getLogger(__name__)

DATA_TABLES = ("ratings", "movies", "probe", "qualifying")
NOT_NULL = {
    "ratings": {USER_ID, MOVIE_ID, RATING},
    "movies": {MOVIE_ID},
    "probe": {MOVIE_ID, USER_ID},
    "qualifying": {MOVIE_ID, USER_ID},
}
# ``line`` holds at most the first 1,024 characters of the rejected line, ``line_length`` its
# whole length.
QUARANTINE_COLUMNS = [("target", "string"), (SOURCE_FILE, "string"), (LINE_NO, "bigint"),
                      ("line", "string"), ("line_length", "bigint"), ("reason", "string"),
                      ("ingest_id", "string"), ("ingested_at", "timestamp")]
# ``source_file`` is the file's name under the source root (its identity), ``location`` where it
# was read from (credentials masked), ``fingerprint`` the SHA-256 of a local file's bytes.
MANIFEST_COLUMNS = [(SOURCE_FILE, "string"), ("target", "string"), ("format", "string"),
                    ("location", "string"), ("size", "bigint"), ("modified", "double"),
                    ("fingerprint", "string"), ("lines_read", "bigint"),
                    ("header_lines", "bigint"), ("rows", "bigint"), ("quarantined", "bigint"),
                    ("skipped", "bigint"), ("ingest_id", "string"), ("ingested_at", "timestamp")]
RUN_COLUMNS = [("ingest_id", "string"), ("ingested_at", "timestamp")]


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: list[tuple[str, str]]
    not_null: set[str]
    checks: dict[str, str]


def data_table_spec(table: str, scale: RatingScale | None = None) -> TableSpec:
    checks = {f"{c}_positive": f"{c} > 0" for c, _ in TABLE_COLUMNS[table] if c.endswith("_id")}
    checks["line_no_positive"] = "line_no > 0"
    if table == "ratings" and scale is not None:
        checks["rating_in_scale"] = scale.check_sql()
    return TableSpec(table, TABLE_COLUMNS[table] + LINEAGE_COLUMNS + RUN_COLUMNS,
                     NOT_NULL[table] | {SOURCE_FILE, LINE_NO, "ingest_id"}, checks)


QUARANTINE = TableSpec("quarantine", QUARANTINE_COLUMNS,
                       {"target", SOURCE_FILE, "reason", "ingest_id"}, {})
MANIFEST = TableSpec("ingest_files", MANIFEST_COLUMNS,
                     {SOURCE_FILE, "target", "format", "lines_read", "ingest_id"}, {})
RECOMMENDATIONS = TableSpec(
    "recommendations",
    [(USER_ID, "int"), ("rank", "int"), (MOVIE_ID, "int"), ("predicted_rating", "double"),
     ("model_version", "int"), ("created_at", "timestamp")],
    {USER_ID, "rank", MOVIE_ID, "predicted_rating", "model_version", "created_at"},
    {"rank_positive": "rank >= 1", "user_id_positive": "user_id > 0",
     "movie_id_positive": "movie_id > 0"})


def table_path(root: str, name: str) -> str:
    """Where a table lives. A relative local root is made absolute: Delta only takes absolute
    paths as ``delta.`path` `` table identifiers."""
    if "://" not in root and not root.startswith(("file:", "dbfs:")):
        root = os.path.abspath(root)
    return f"{root.rstrip('/')}/{name}"


def absolute_root(root: str) -> str:
    """``lake.root`` as its tables' paths spell it (a relative local root made absolute)."""
    return table_path(root, "").rstrip("/")


def local_root(config) -> Path | None:
    """Before Spark starts: ``lake.root`` as a local folder when it surely is one (a ``file:``
    root, or a plain path with a local master and no other default filesystem); None when a
    cluster's default filesystem (HDFS, DBFS) may resolve it. For the start-up checks only:
    once Spark is up, :func:`local_path` asks Hadoop."""
    root = config.lake.root
    if remote_url(config) is not None:
        return None  # the Connect server resolves it, on its own filesystem
    if root.startswith("file:"):
        return Path(root.removeprefix("file:")).absolute()
    if "://" in root or root.startswith("dbfs:"):
        return None
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit chose the master
    master = config.spark.master or ""
    if submitted or not master.startswith("local") or "spark.hadoop.fs.defaultFS" in \
            config.spark.conf:
        return None
    return Path(root).absolute()


def local_path(spark: SparkSession, root: str) -> Path | None:
    """The lake's folder when its filesystem is this machine's disk, as Hadoop resolves it for
    this session (a plain path goes to ``fs.defaultFS``); None for any other filesystem, and for
    every lake over Spark Connect (its paths name the server's filesystems)."""
    from py4j.protocol import Py4JError

    if is_connect(spark):
        return None
    try:
        jvm = spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(absolute_root(root))
        filesystem = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        scheme = filesystem.getScheme()
        local = Path(filesystem.makeQualified(path).toUri().getPath())
    except (Py4JError, AttributeError):
        # A cluster that hides the JVM from Python (Databricks' shared access mode): the Delta
        # lock works on any filesystem.
        logger.debug("cannot ask Hadoop which filesystem holds %s", root, exc_info=True)
        return None
    return local if scheme == "file" else None


def check_writable(config) -> None:
    """For a lake on local disk: fail now, naming the folder, if it cannot be written (Spark
    would fail later inside a job with a Java trace). Other roots are left to their store."""
    path = local_root(config)
    if path is None:
        return
    root = config.lake.root
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(f"cannot write to lake.root {root}: {existing} is not a writable folder")


def check_ingested(config) -> None:
    """For a lake on local disk: fail now if it holds no ``ratings`` table (a command that reads
    it would learn that only after Spark's start-up). Other roots are checked by Spark."""
    root = local_root(config)
    if root is None:
        return
    path = root / "ratings"
    if not (path / "_delta_log").is_dir():
        raise JobError(f"no ratings table at {path}: run `prizeflow ingest` first")


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The table at ``path``, at Delta ``version`` (None: the latest)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


# Delta's table metadata through SQL, not the DeltaTable API: the same statements run on
# classic Spark and over Spark Connect (whose DeltaTable needs a server plugin).
def ident(path: str) -> str:
    """The SQL identifier of the Delta table at ``path``."""
    return "delta.`" + path.replace("`", "``") + "`"


_NO_TABLE = ("DELTA_MISSING_DELTA_TABLE", "PATH_NOT_FOUND", "DELTA_PATH_DOES_NOT_EXIST",
             "DELTA_TABLE_NOT_FOUND", "DELTA_TABLE_ONLY_OPERATION")


def _first_or_none(spark: SparkSession, statement: str):
    """The first row of a DESCRIBE on a Delta table; None when no table is there."""
    from pyspark.errors import AnalysisException

    try:
        return spark.sql(statement).first()
    except AnalysisException as exc:
        if exc.getCondition() in _NO_TABLE:
            return None
        raise


def is_table(spark: SparkSession, path: str) -> bool:
    detail = _first_or_none(spark, f"DESCRIBE DETAIL {ident(path)}")
    return detail is not None and detail["format"] == "delta"


def history(spark: SparkSession, path: str) -> DataFrame:
    """The table's commits (``version``, ``timestamp``, ``operation``, ...), newest first."""
    return spark.sql(f"DESCRIBE HISTORY {ident(path)}")


def version(spark: SparkSession, path: str) -> int | None:
    latest = _first_or_none(spark, f"DESCRIBE HISTORY {ident(path)} LIMIT 1")
    return None if latest is None else int(latest["version"])


def table_id(spark: SparkSession, path: str) -> str:
    """The Delta table's id: a table re-created at the same path gets a new one."""
    return str(spark.sql(f"DESCRIBE DETAIL {ident(path)}").select("id").first()[0])


def properties(spark: SparkSession, path: str) -> dict[str, str]:
    detail = spark.sql(f"DESCRIBE DETAIL {ident(path)}").select("properties").first()
    return dict(detail[0] or {})


def update(spark: SparkSession, path: str, assignments: dict[str, str], condition: str) -> int:
    """One Delta UPDATE of the rows matching ``condition``; how many rows it changed."""
    rendered = ", ".join(f"{column} = {value}" for column, value in assignments.items())
    row = spark.sql(f"UPDATE {ident(path)} SET {rendered} WHERE {condition}").first()
    return int(row[0]) if row is not None else 0


def sql_string(value: str | None) -> str:
    """A SQL literal of ``value`` (NULL for None)."""
    return "NULL" if value is None else f"'{_sql_text(value)}'"


def ensure_table(spark: SparkSession, path: str, spec: TableSpec,
                 table_properties: dict[str, str] | None = None) -> bool:
    """Create the table with its schema, NOT NULLs and CHECK constraints if it is not there;
    True when it was created now.

    The constraints go in as ``delta.constraints.*`` properties of the CREATE itself: one commit,
    where ``ALTER TABLE ... ADD CONSTRAINT`` costs a commit (and a table scan) each."""
    if is_table(spark, path):
        return False
    columns = ", ".join(f"{name} {kind.upper()}{' NOT NULL' if name in spec.not_null else ''}"
                        for name, kind in spec.columns)
    props = {f"delta.constraints.{name}": expr for name, expr in spec.checks.items()}
    props.update(table_properties or {})
    rendered = ", ".join(f"'{k}' = '{_sql_text(v)}'" for k, v in props.items())
    spark.sql(f"CREATE TABLE IF NOT EXISTS {ident(path)} ({columns}) USING delta"
              + (f" TBLPROPERTIES ({rendered})" if rendered else ""))
    logger.info("created Delta table %s", path)
    return True


def _sql_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def empty(spark: SparkSession, spec: TableSpec) -> DataFrame:
    """No rows, with the table's columns."""
    return spark.createDataFrame([], ", ".join(f"{n} {t}" for n, t in spec.columns))


def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
    """Select the table's columns in order with its types (schema enforcement does the rest)."""
    return df.select(*[F.col(name).cast(kind).alias(name) for name, kind in spec.columns])


def replace_files(spark: SparkSession, df: DataFrame, path: str, spec: TableSpec,
                  source_files: list[str], fresh: bool = False) -> None:
    """Write ``df`` as the table's rows for ``source_files``, replacing any earlier rows of
    those files (a changed file, or a run that stopped half way) in one commit. ``fresh``: the
    table was created by this run, so there is nothing to replace."""
    df = conform(df, spec)
    if fresh or (read(spark, path)
                 .where(F.col(SOURCE_FILE).isin(source_files)).limit(1).count() == 0):
        df.write.format("delta").mode("append").save(path)
        return
    quoted = ", ".join(f"'{_sql_text(f)}'" for f in source_files)
    (df.write.format("delta").mode("overwrite")
     .option("replaceWhere", f"source_file IN ({quoted})").save(path))


def overwrite(spark: SparkSession, df: DataFrame, path: str, spec: TableSpec) -> None:
    """Replace every row of the table (created with its constraints when missing) in one commit."""
    ensure_table(spark, path, spec)
    conform(df, spec).write.format("delta").mode("overwrite").save(path)


def overwrite_as_is(df: DataFrame, path: str) -> None:
    """Replace the Delta table at ``path`` (created when missing) with ``df``, its schema
    included, in one commit: for tables whose columns follow the caller's input."""
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
