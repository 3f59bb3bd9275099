"""Sending rows to Spark tasks by number: task t's rows, and only them, in partition t.

The numpy stages (movie-block pairs, user buckets) hold one task's rows in memory at once.
``repartition(n, column)`` places a row by pmod(murmur3(column), n), so two task numbers can
share a partition (twice the memory, half the parallelism). Instead each task number is mapped to
a key whose hash lands on that very partition, found once by a tiny Spark job over candidate
integers: Spark's ``hash`` function is the same Murmur3 (seed 42) its hash partitioning uses.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from prizeflow.sessions import connect_state, is_connect

TASK = "_pf_task"
_KEY = "_pf_key"


def parallelism(spark: SparkSession) -> int:
    """Cores the session's executors offer (Spark's default parallelism). Over Spark Connect,
    where the client has no ``sparkContext``, the server tells it through the number of
    partitions a range gets by default (one small job, once per session)."""
    if not is_connect(spark):
        return max(1, int(spark.sparkContext.defaultParallelism))
    state = connect_state(spark)
    if state.parallelism is None:
        last = (spark.range(0, 1 << 20).select(F.spark_partition_id().alias("part"))
                .agg(F.max("part")).first()[0])
        state.parallelism = int(last) + 1
    return state.parallelism


def _keys(spark: SparkSession, count: int) -> DataFrame:
    candidates = spark.range(0, 64 * count + 1024).select(
        F.col("id").alias(_KEY), F.pmod(F.hash("id"), F.lit(count)).cast("long").alias(TASK))
    return candidates.groupBy(TASK).agg(F.min(_KEY).alias(_KEY))


def by_task(frame: DataFrame, task: Column, count: int) -> DataFrame:
    """``frame`` repartitioned into ``count`` partitions, the rows with task number t (0..count-1)
    in partition t; the task column is dropped."""
    spark = frame.sparkSession
    keys = _keys(spark, count)
    return (frame.withColumn(TASK, task.cast("long"))
            .join(F.broadcast(keys), TASK)
            .repartition(count, _KEY)
            .drop(TASK, _KEY))


def arrow_table(batches):
    """One task's Arrow record batches as a table, or None when the task got no rows."""
    import pyarrow as pa

    batches = [b for b in batches if b.num_rows]
    return pa.Table.from_batches(batches) if batches else None


def binary_values(column, dtype: str):
    """Every value of a binary Arrow column end to end as one numpy array of ``dtype``, and
    each row's length in items: read from the Arrow buffers, not copied row by row."""
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    pieces, lengths = [], []
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[
            chunk.offset:chunk.offset + len(chunk) + 1]
        lengths.append(np.diff(offsets) // itemsize)
        data = chunk.buffers()[2]
        if data is not None and offsets[-1] > offsets[0]:
            pieces.append(np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]])
    if not lengths:
        return np.zeros(0, dtype), np.zeros(0, np.int64)
    # One copy: aligned, and independent of the Arrow table's lifetime.
    raw = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    return raw.view(dtype), np.concatenate(lengths).astype(np.int64)


def pack(frame: DataFrame, task: str, columns: Sequence[tuple[str, str, str]],
         pack_rows: int) -> DataFrame:
    """``frame``'s rows packed in place, before any shuffle: each Spark task takes its own
    partition about ``pack_rows`` rows at a time (whole Arrow batches) and writes one row per
    task number (the int column ``task``) holding each of ``columns`` (source column, packed
    name, numpy dtype) as the little-endian bytes of that number's values, end to end.

    Sending those few large rows to their tasks (:func:`by_task`) moves the same values as
    one row per value would, without a shuffle row and an Arrow row for each; a packing task
    holds about ``pack_rows`` rows at once however big its partition is."""
    import numpy as np
    import pyarrow as pa

    names = [task] + [packed for _, packed, _ in columns]

    def packed_by_task(table) -> Iterator[pa.RecordBatch]:
        number = table.column(task).to_numpy()
        order = np.argsort(number, kind="stable")
        number = number[order]
        values = [(table.column(source).to_numpy()[order], dtype)
                  for source, _, dtype in columns]
        del table, order
        ids, starts = np.unique(number, return_index=True)
        for value, first, last in zip(ids, starts, np.append(starts[1:], len(number))):
            yield pa.RecordBatch.from_arrays(
                [pa.array([int(value)], pa.int32())]
                + [pa.array([np.ascontiguousarray(column[first:last], dtype=dtype).tobytes()],
                            pa.binary()) for column, dtype in values],
                names=names)

    def pack_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held, count = [], 0
        for batch in batches:
            if batch.num_rows:
                held.append(batch)
                count += batch.num_rows
            if count >= pack_rows:
                yield from packed_by_task(pa.Table.from_batches(held))
                held, count = [], 0
        if held:
            yield from packed_by_task(pa.Table.from_batches(held))

    schema = ", ".join([f"{task} int"] + [f"{packed} binary" for _, packed, _ in columns])
    return frame.mapInArrow(pack_task, schema)
