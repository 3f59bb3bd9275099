"""The lake's publish point: which table versions make up the last complete ingest.

An ingest commits each of its tables on its own (Delta has no transaction across tables):
``ratings``, ``movies``, ``probe``, ``qualifying``, ``quarantine``, then the ``ingest_files``
manifest. Its last commit appends one row to ``ingest_commits`` naming the version of every
table it leaves behind: that row is the publish point. Readers (``train``, ``register``'s
re-score, ``recommend``, the notebooks) read every table at the versions of one such row, so they
never see half an ingest, and a train run logs the row it read.

A later ingest starts (holding the lake's ingest lock) by rolling back what an ingest that died
between its commits left: any table past its published version is restored to it
(``RESTORE TABLE``, a metadata-only commit), and a table that no ingest ever published is
emptied. Its change check then reads the published manifest, so it reads again exactly the files
the dead run did not publish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from prizeflow import lake
from prizeflow.errors import JobError

logger = logging.getLogger(__name__)

TABLE = "ingest_commits"
# Every table an ingest writes, in the order it commits them.
INGESTED = lake.DATA_TABLES + ("quarantine", "ingest_files")
COMMITS = lake.TableSpec(
    TABLE,
    [("seq", "bigint"), ("ingest_id", "string"), ("committed_at", "timestamp"),
     ("format", "string")] + [(f"{t}_version", "bigint") for t in INGESTED],
    {"seq", "ingest_id", "committed_at"}, {})


@dataclass(frozen=True)
class Snapshot:
    """One complete ingest: the Delta version of each table (None: no such table then)."""
    seq: int
    ingest_id: str
    committed_at: datetime
    versions: dict[str, int | None]

    def version(self, table: str) -> int | None:
        return self.versions.get(table)

    def read(self, spark: SparkSession, root: str, table: str):
        """The table as this ingest left it; a JobError when it had no such table."""
        version = self.version(table)
        if version is None:
            raise JobError(f"the lake at {root} has no {table} table (ingest {self.ingest_id})")
        return lake.read(spark, lake.table_path(root, table), version)


def _rows(spark: SparkSession, root: str):
    path = lake.table_path(root, TABLE)
    if not lake.is_table(spark, path):
        return None
    return lake.read(spark, path)


def _snapshot(row) -> Snapshot:
    versions = {t: (None if row[f"{t}_version"] is None else int(row[f"{t}_version"]))
                for t in INGESTED}
    return Snapshot(int(row.seq), row.ingest_id, row.committed_at, versions)


def _newest(rows) -> Snapshot | None:
    row = rows.orderBy(F.col("seq").desc()).first()
    return None if row is None else _snapshot(row)


def latest(spark: SparkSession, root: str) -> Snapshot | None:
    """The last complete ingest into the lake at ``root``, or None."""
    rows = _rows(spark, root)
    return None if rows is None else _newest(rows)


def for_reading(spark: SparkSession, root: str, ratings_version: int | None = None) -> Snapshot:
    """The snapshot a reader uses: the last complete ingest, or with ``ratings_version`` the
    last complete ingest that left ``ratings`` at that version. A JobError says why there is
    none."""
    rows = _rows(spark, root)
    newest = None if rows is None else _newest(rows)
    if newest is None:
        ratings = lake.table_path(root, "ratings")
        if lake.is_table(spark, ratings):
            raise JobError(f"the lake at {root} holds no complete ingest (its ingest did not "
                           "finish, or an earlier prizeflow wrote it): run `prizeflow ingest` "
                           "again")
        raise JobError(f"no ratings table at {ratings}: run `prizeflow ingest` first")
    if ratings_version is None:
        return newest
    row = (rows.where(F.col("ratings_version") == ratings_version)
           .orderBy(F.col("seq").desc()).first())
    if row is None:
        published = sorted({int(r[0]) for r in rows.select("ratings_version").collect()
                            if r[0] is not None})
        raise JobError(f"data.version {ratings_version} is not a complete ingest of "
                       f"{lake.table_path(root, 'ratings')}; complete versions: "
                       f"{', '.join(map(str, published)) or 'none'}")
    return _snapshot(row)


def roll_back_unpublished(spark: SparkSession, root: str, published: Snapshot | None) -> list[str]:
    """Undo the commits of an ingest that died before publishing; the tables it touched.
    Must run with the lake's ingest lock held."""
    undone = []
    for table in INGESTED:
        path = lake.table_path(root, table)
        current = lake.version(spark, path)
        if current is None:
            continue
        keep = published.version(table) if published is not None else None
        if keep is None:
            if lake.read(spark, path).limit(1).count() == 0:
                continue
            spark.sql(f"DELETE FROM {lake.ident(path)}")
        elif current > keep:
            spark.sql(f"RESTORE TABLE {lake.ident(path)} TO VERSION AS OF {keep}")
        else:
            continue
        undone.append(table)
    if undone:
        logger.warning("rolled back %s in %s to the last complete ingest (%s): an ingest died "
                       "between its commits", ", ".join(undone), root,
                       published.ingest_id if published else "none")
    return undone


def publish(spark: SparkSession, root: str, ingest_id: str, fmt: str,
            previous: Snapshot | None) -> Snapshot:
    """Record the current version of every ingested table as one complete ingest."""
    versions = {t: lake.version(spark, lake.table_path(root, t)) for t in INGESTED}
    seq = (previous.seq if previous is not None else 0) + 1
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    row = (seq, ingest_id, now, fmt, *[versions[t] for t in INGESTED])
    schema = ", ".join(f"{n} {t}" for n, t in COMMITS.columns)
    path = lake.table_path(root, TABLE)
    lake.ensure_table(spark, path, COMMITS)
    lake.conform(spark.createDataFrame([row], schema), COMMITS).write.format("delta") \
        .mode("append").save(path)
    return Snapshot(seq, ingest_id, now, versions)
