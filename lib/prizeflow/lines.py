"""Where each text line came from: its file, its line number, and the header above it.

Spark reads a large text file as many splits, possibly on different executors, and a split's
lines do not know their line number nor the ``MovieID:`` header above them when that header
sits in an earlier split. This module restores both with plain DataFrame operations, in the
JVM and without shuffling the lines:

1. every line gets ``seq = monotonically_increasing_id()``; inside one split the ids of
   consecutive lines are consecutive;
2. a small aggregate per split (first id, line count, last non-blank id, the headers in it)
   is turned, with window functions over splits, into line offsets and into *intervals*:
   id ranges that share one governing header, including the header carried in from earlier
   splits of the same file;
3. the lines are joined to the broadcast intervals on a coarse id bucket plus a range test.

The per-split aggregate also names each file: Spark spells a line's file as a URL-encoded URI
(``_metadata.file_path``), which is decoded there (a few rows per file, not per line) and
matched to the file's identity in the source plan (:mod:`prizeflow.sources`).

Both uses of the scan see the same files with the same split layout, so ids agree; a line that
finds no interval is reported (``located`` false) rather than silently dropped.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from prizeflow.columns import LINE_NO, SOURCE_FILE

# Lines per join bucket = 2**BUCKET_BITS. Small buckets keep few intervals per bucket.
BUCKET_BITS = 10


def is_header_line(value: Column) -> Column:
    """A ``MovieID:`` line (valid or not): anything whose trimmed text ends with a colon."""
    return F.rtrim(value).endswith(":")


def _split_stats(lines: DataFrame, with_headers: bool) -> DataFrame:
    header_entry = F.when(F.col("is_header"), F.struct(F.col("_seq").alias("seq"),
                                                       F.col("value").alias("text")))
    aggregates = [
        F.min("_seq").alias("first_seq"),
        F.count(F.lit(1)).alias("n_lines"),
        F.max(F.when(F.trim("value") != "", F.col("_seq"))).alias("last_content_seq"),
    ]
    if with_headers:
        aggregates.append(F.sort_array(F.collect_list(header_entry)).alias("headers"))
    stats = lines.groupBy(SOURCE_FILE, "block_start").agg(*aggregates)
    if not with_headers:
        stats = stats.withColumn(
            "headers", F.array().cast("array<struct<seq:bigint,text:string>>"))
    return stats


def decoded_location(file_path: Column) -> Column:
    """Spark's URL-encoded file URI as the plain Hadoop path (``file:/pf dir/x``). Hadoop's URIs
    leave ``+`` literal, and a URL decoder would read it as a space: it is escaped first."""
    return F.url_decode(F.replace(file_path, F.lit("+"), F.lit("%2B")))


def _named(stats: DataFrame, files: DataFrame | None) -> DataFrame:
    """``file_name``: each split's file by its identity in ``files`` (``location``, ``name``),
    null for a file the plan does not hold; without ``files``, the decoded location."""
    stats = stats.withColumn("_location", decoded_location(F.col(SOURCE_FILE)))
    if files is None:
        return stats.withColumn("file_name", F.col("_location"))
    names = F.broadcast(files.select(F.col("location").alias("_location"),
                                     F.col("name").alias("file_name")))
    return stats.join(names, on="_location", how="left")


def _intervals(stats: DataFrame) -> DataFrame:
    in_file = Window.partitionBy(SOURCE_FILE).orderBy("block_start")
    before = in_file.rowsBetween(Window.unboundedPreceding, -1)
    whole_file = Window.partitionBy(SOURCE_FILE)
    stats = (
        stats
        .withColumn("line_offset", F.coalesce(F.sum("n_lines").over(before), F.lit(0)))
        .withColumn("carried_header", F.last(F.try_element_at("headers", F.lit(-1))["text"],
                                             ignorenulls=True).over(before))
        .withColumn("last_content_line", F.max(
            F.col("line_offset") + F.col("last_content_seq") - F.col("first_seq") + 1
        ).over(whole_file))
    )
    # Interval k of a split runs from its k-th start to the next start (or the split's end).
    stats = (
        stats
        .withColumn("starts", F.concat(F.array(F.col("first_seq")), F.col("headers.seq")))
        .withColumn("ends", F.concat(F.col("headers.seq"),
                                     F.array(F.col("first_seq") + F.col("n_lines"))))
        .withColumn("labels", F.concat(F.array(F.col("carried_header")), F.col("headers.text")))
    )
    pieces = F.transform(
        F.sequence(F.lit(0), F.size("starts") - 1),
        lambda k: F.struct(F.get("starts", k).alias("start"), F.get("ends", k).alias("end"),
                           F.get("labels", k).alias("header")))
    intervals = (
        stats.select("first_seq", "line_offset", "last_content_line", "file_name", "_location",
                     F.explode(pieces).alias("piece"))
        .select("first_seq", "line_offset", "last_content_line", "file_name", "_location",
                "piece.*")
        .where(F.col("start") < F.col("end"))
    )
    return intervals.withColumn(
        "bucket", F.explode(F.sequence(F.shiftright("start", BUCKET_BITS),
                                       F.shiftright(F.col("end") - 1, BUCKET_BITS))))


def locate_lines(raw: DataFrame, with_headers: bool = True,
                 files: DataFrame | None = None) -> DataFrame:
    """Add ``line_no`` (1-based within its file), ``header`` (text of the governing header line,
    null before the first one), ``is_header``, ``last_content_line`` (the file's last non-blank
    line number) and ``located`` to a frame of ``value, source_file, block_start`` lines, and
    name each line's file (``source_file``) by its identity in ``files`` (columns ``location``,
    ``name``). A line of a file ``files`` does not hold keeps its location and is not located."""
    lines = raw.withColumn("_seq", F.monotonically_increasing_id())
    lines = lines.withColumn("is_header", is_header_line(F.col("value")) if with_headers
                             else F.lit(False))
    intervals = _intervals(_named(_split_stats(lines, with_headers), files)).alias("iv")
    joined = lines.alias("ln").join(
        F.broadcast(intervals),
        on=[F.shiftright(F.col("ln._seq"), BUCKET_BITS) == F.col("iv.bucket"),
            F.col("ln._seq") >= F.col("iv.start"), F.col("ln._seq") < F.col("iv.end")],
        how="left",
    )
    return joined.select(
        F.col("ln.value").alias("value"),
        F.coalesce(F.col("iv.file_name"), F.col("iv._location"),
                   decoded_location(F.col("ln.source_file"))).alias(SOURCE_FILE),
        (F.col("iv.line_offset") + F.col("ln._seq") - F.col("iv.first_seq") + 1).alias(LINE_NO),
        F.col("iv.header").alias("header"),
        F.col("ln.is_header").alias("is_header"),
        F.col("iv.last_content_line").alias("last_content_line"),
        (F.col("iv.start").isNotNull() & F.col("iv.file_name").isNotNull()).alias("located"),
    )
