"""Predictions for given (user, movie) pairs from a registered model: the Prize's submission.

:func:`predict` (what ``prizeflow predict`` runs) loads ``models:/<mlflow.registered_model>@
<alias>`` and scores, in Spark tasks with the model's own rule (:func:`prizeflow.scoring.score`),

- ``--qualifying``: every pair of the lake's ``qualifying`` table (the Prize's hidden ratings),
  and with ``--out FILE`` writes them in the Prize's format, in the order of the source file:
  each ``movie:`` header, then one predicted rating per line, clipped to 1..5 (see
  :func:`prize_lines`);
- ``--pairs TABLE``: every row of any Delta table holding ``user_id`` and ``movie_id``.

With ``--out-table PATH`` the pairs and their predictions (the model's rule, clipped to the
lake's rating scale) and the model version replace that Delta table in one commit. Each user's
history (for the neighbour term) is their ratings as the last complete ingest left them, with
the qualifying pairs in N(u) (for the implicit term), as ``recommend`` reads it; a model with
time effects scores each pair at its ``rated_on`` date.
A registered blend of models (:mod:`prizeflow.blending`) scores each pair with every member and
combines their predictions with its weights.

The Prize file is written by one Spark task (the file is one sequence) into a folder beside
``FILE`` and then renamed to ``FILE`` through the Hadoop filesystem that holds it, so ``FILE``
may be local or on a cluster's storage; nothing proportional to the pairs passes through the
driver.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from prizeflow import lake, recommending, scoring
from prizeflow.columns import (DAY, LINE_NO, MOVIE_ID, PREDICTION, RATED_ON, RATING, SOURCE_FILE,
                               TAG, USER_ID)
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.factors import FactorModel
from prizeflow.blend_scoring import blended_column
from prizeflow.model_blend import BlendedModel, member_column
from prizeflow.secrets import redact_text
from prizeflow.sessions import is_connect
from prizeflow.time_effects import day_number

logger = logging.getLogger(__name__)

PRIZE_LOW, PRIZE_HIGH = 1.0, 5.0  # the Prize's scale: a submission's ratings lie in it
PRIZE_DECIMALS = 3


def check_request(qualifying: bool, pairs: str | None, out: str | None,
                  out_table: str | None) -> None:
    """The options make one request: the qualifying pairs or a table of pairs, and somewhere
    to write them."""
    if qualifying == (pairs is not None):
        raise JobError("predict needs exactly one of --qualifying and --pairs TABLE")
    if out is not None and not qualifying:
        raise JobError("--out FILE writes the Prize's format, for --qualifying only; "
                       "use --out-table PATH for --pairs")
    if out is None and out_table is None:
        raise JobError("predict needs somewhere to write: --out FILE (with --qualifying) "
                       "or --out-table PATH")


def with_predictions(model: FactorModel, users: DataFrame, pairs: DataFrame, history: DataFrame,
                     buckets: int) -> DataFrame:
    """``pairs`` (user_id, movie_id[, rated_on], ...) with the model's ``prediction``: each
    distinct pair is scored once, with its user's ``history`` (user_id, movie_id, rating[,
    rated_on]). For a model with time effects the pair's ``rated_on`` is part of it (a pair
    without one is scored at the model's latest day)."""
    timed = model.time is not None and RATED_ON in pairs.columns
    # Keyed by the day, not the raw rated_on: two times of one day are one pair to score.
    asked = (pairs.withColumn("_pf_day", day_number(F.col(RATED_ON)).cast("float")) if timed
             else pairs)
    keys = [USER_ID, MOVIE_ID] + ([F.col("_pf_day").alias(DAY)] if timed else [])
    wanted = (asked.select(*keys).distinct()
              .select("*", F.lit(None).cast("double").alias(RATING), F.lit(1).alias(TAG)))
    parts = scoring.score(model, users, wanted, history, buckets)
    scored = parts.select(USER_ID, MOVIE_ID, DAY,
                          scoring.predictions(model)[PREDICTION].alias(PREDICTION))
    if not timed:
        return pairs.join(scored.drop(DAY), [USER_ID, MOVIE_ID], "left")
    # The day of a pair without a date is null on both sides: matched null-safely.
    matched = asked.join(scored, [asked[USER_ID] == scored[USER_ID],
                                  asked[MOVIE_ID] == scored[MOVIE_ID],
                                  asked["_pf_day"].eqNullSafe(scored[DAY])], "left")
    return matched.select(asked["*"], scored[PREDICTION]).drop("_pf_day")


def with_blended_predictions(model: BlendedModel, pairs: DataFrame, history: DataFrame,
                             buckets: int) -> DataFrame:
    """:func:`with_predictions` for a blend of models: each member predicts every distinct
    request (user_id, movie_id[, rated_on]) once, the members' predictions are joined by request
    and combined by the blend's weights, and the result joined back to ``pairs`` (a request
    without a date matched null-safely)."""
    spark = pairs.sparkSession
    keys = [USER_ID, MOVIE_ID] + ([RATED_ON] if RATED_ON in pairs.columns else [])
    requests = pairs.select(*keys).distinct()
    scored = None
    for index, member in enumerate(model.members):
        one = (with_predictions(member, scoring.user_frame(spark, member), requests, history,
                                buckets)
               .withColumnRenamed(PREDICTION, member_column(index)))
        scored = one if scored is None else _join_by_request(scored, one, keys, "inner")
    blended = scored.select(*keys, blended_column(model).alias(PREDICTION))
    return _join_by_request(pairs, blended, keys, "left")


def _join_by_request(left: DataFrame, right: DataFrame, keys: list[str], how: str) -> DataFrame:
    """``left`` with ``right``'s other columns, matched on ``keys`` (``rated_on``
    null-safely); both sides may come from one frame, hence the aliases."""
    mine, theirs = left.alias("_pf_left"), right.alias("_pf_right")
    condition = [F.col(f"_pf_left.{k}").eqNullSafe(F.col(f"_pf_right.{k}")) if k == RATED_ON
                 else F.col(f"_pf_left.{k}") == F.col(f"_pf_right.{k}") for k in keys]
    extra = [F.col(f"_pf_right.{c}") for c in right.columns if c not in keys]
    return mine.join(theirs, condition, how).select("_pf_left.*", *extra)


def prize_lines(predicted: DataFrame) -> DataFrame:
    """The Prize's submission format, one ``value`` per output line, in the order of the
    source lines (source_file, line_no): a ``movie:`` line wherever the movie changes (as in
    ``qualifying.txt``), and each prediction clipped to 1..5 with three decimals; in one
    partition, in order: the file is one sequence."""
    previous = F.lag(MOVIE_ID).over(Window.partitionBy(SOURCE_FILE).orderBy(LINE_NO))
    rating = F.format_string(f"%.{PRIZE_DECIMALS}f",
                             F.least(F.greatest(F.col(PREDICTION), F.lit(PRIZE_LOW)),
                                     F.lit(PRIZE_HIGH)))
    new_movie = previous.isNull() | (previous != F.col(MOVIE_ID))
    # A range-partitioned sort, then one partition: coalesce keeps the partitions' order.
    return (predicted.select(
        SOURCE_FILE, LINE_NO,
        F.when(new_movie, F.concat(F.col(MOVIE_ID).cast("string"), F.lit(":\n"), rating))
        .otherwise(rating).alias("value"))
        .orderBy(SOURCE_FILE, LINE_NO).coalesce(1).select("value"))


def _write_text_file(spark: SparkSession, lines: DataFrame, out: str) -> None:
    """``lines`` (one partition, in order) as the one text file ``out``, replacing it."""
    if is_connect(spark):
        raise JobError("--out FILE needs a classic Spark session (over Spark Connect the file "
                       "cannot be renamed into place); use --out-table PATH")
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(out)
    filesystem = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    target = filesystem.makeQualified(target)
    folder = jvm.org.apache.hadoop.fs.Path(target.getParent(),
                                           f".{target.getName()}.{uuid.uuid4().hex}.parts")
    try:
        lines.write.option("lineSep", "\n").text(folder.toString())
        parts = [s.getPath() for s in filesystem.listStatus(folder)
                 if s.getPath().getName().startswith("part-")]
        if len(parts) != 1:
            raise JobError(f"expected one part file for {redact_text(out)}, Spark wrote "
                           f"{len(parts)}")
        if filesystem.exists(target):
            filesystem.delete(target, False)
        if not filesystem.rename(parts[0], target):
            raise JobError(f"could not move the predictions into {redact_text(out)}")
    finally:
        filesystem.delete(folder, True)


def _pairs_table(spark: SparkSession, path: str) -> DataFrame:
    """The Delta table of pairs at ``path``; an error naming it when it is not one, lacks a
    key column or holds a null key."""
    if not lake.is_table(spark, path):
        raise JobError(f"--pairs {redact_text(path)}: not a Delta table")
    pairs = lake.read(spark, path)
    missing = [c for c in (USER_ID, MOVIE_ID) if c not in pairs.columns]
    if missing:
        raise JobError(f"--pairs {redact_text(path)}: no column {', '.join(missing)} "
                       f"(it has {', '.join(pairs.columns)})")
    nulls = pairs.where(F.col(USER_ID).isNull() | F.col(MOVIE_ID).isNull()).count()
    if nulls:
        raise JobError(f"--pairs {redact_text(path)}: {nulls} row(s) with a null user_id or "
                       f"movie_id")
    return pairs.withColumn(USER_ID, F.col(USER_ID).cast("int")).withColumn(
        MOVIE_ID, F.col(MOVIE_ID).cast("int"))


def predict(spark: SparkSession, config: Config, qualifying: bool = False,
            pairs: str | None = None, out: str | None = None, out_table: str | None = None,
            alias: str = "champion") -> dict[str, Any]:
    """Predict every requested pair (see the module docstring); the summary."""
    check_request(qualifying, pairs, out, out_table)
    model, version, snapshot, history, buckets = recommending.registered_model_and_history(
        spark, config, alias)
    name, root = config.mlflow.registered_model, config.lake.root
    if qualifying:
        requested = snapshot.read(spark, root, "qualifying")
        source = "qualifying"
    else:
        requested = _pairs_table(spark, pairs)
        source = redact_text(pairs)
    # The model's rule clips to the lake's own scale (half stars on some MovieLens data); the
    # Prize file alone is clipped to 1..5 (prize_lines).
    if isinstance(model, BlendedModel):
        predicted = with_blended_predictions(model, requested, history, buckets)
    else:
        predicted = with_predictions(model, scoring.user_frame(spark, model), requested, history,
                                     buckets)
    summary: dict[str, Any] = {"model_name": name, "alias": alias, "model_version": version,
                               "pairs_from": source, "ingest_id": snapshot.ingest_id}
    if qualifying:
        summary.update(_qualifying_accounting(snapshot.read(spark, root, "ingest_files")))
        if summary["qualifying_pairs"] == 0:
            raise JobError("the lake's qualifying table holds no pairs (a MovieLens corpus has "
                           "none): nothing to predict")
    if out_table is not None:
        created = datetime.now(timezone.utc).replace(tzinfo=None)
        written = (predicted.withColumn("model_version", F.lit(version))
                   .withColumn("predicted_at", F.lit(created).cast("timestamp")))
        lake.overwrite_as_is(written, out_table)
        summary.update({"out_table": redact_text(out_table),
                        "rows": lake.read(spark, out_table).count(),
                        "delta_version": lake.version(spark, out_table)})
    if out is not None:
        _write_text_file(spark, prize_lines(predicted), out)
        summary.update(_file_counts(spark, out))
    logger.info("predictions of model version %s written: %s", version, summary)
    return summary


def _qualifying_accounting(manifest: DataFrame) -> dict[str, Any]:
    """How many pairs the qualifying table holds and how many of its source lines were
    quarantined at ingest (those have no prediction: a submission needs them all), from the
    ingest's ``manifest`` (ingest_files)."""
    files = manifest.where(F.col("target") == "qualifying")
    row = files.agg(F.sum("rows").alias("rows"), F.sum("quarantined").alias("quarantined")).first()
    rows, quarantined = int(row["rows"] or 0), int(row["quarantined"] or 0)
    if quarantined:
        logger.warning("%d qualifying line(s) were quarantined at ingest and have no "
                       "prediction: the file is not a complete submission", quarantined)
    return {"qualifying_pairs": rows, "qualifying_lines_quarantined": quarantined}


def _file_counts(spark: SparkSession, out: str) -> dict[str, Any]:
    """The written file read back by Spark: its header and prediction lines."""
    text = spark.read.text(out)
    row = text.agg(F.sum(F.col("value").endswith(":").cast("int")).alias("headers"),
                   F.count(F.lit(1)).alias("lines")).first()
    headers = int(row["headers"] or 0)
    return {"out": redact_text(out), "movies": headers,
            "predictions": int(row["lines"]) - headers}
