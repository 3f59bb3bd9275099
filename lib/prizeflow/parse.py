"""Parsing located lines into table rows, each line with exactly one outcome.

Input: the output of :func:`prizeflow.lines.locate_lines`. Output: one row per input line with
the target table's columns plus ``source_file, line_no, line, outcome, reason`` where
``outcome`` is ``row`` (goes to the table), ``header`` (a ``MovieID:`` or CSV header line),
``skipped`` (a blank line after the file's last content) or ``quarantined`` (with a ``reason``).
Everything is Spark SQL expressions: no Python runs per line.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from prizeflow.columns import (GENRES, LINE_NO, MOVIE_ID, RATED_ON, RATING, SOURCE_FILE, TITLE,
                               USER_ID, YEAR)

ROW, HEADER, SKIPPED, QUARANTINED = "row", "header", "skipped", "quarantined"

TABLE_COLUMNS = {
    "ratings": [(USER_ID, "int"), (MOVIE_ID, "int"), (RATING, "float"), (RATED_ON, "date")],
    "movies": [(MOVIE_ID, "int"), (YEAR, "int"), (TITLE, "string"), (GENRES, "string")],
    "probe": [(MOVIE_ID, "int"), (USER_ID, "int")],
    "qualifying": [(MOVIE_ID, "int"), (USER_ID, "int"), (RATED_ON, "date")],
}
LINEAGE_COLUMNS = [(SOURCE_FILE, "string"), (LINE_NO, "bigint")]
# The (unique) key of each table: a repeated key keeps the first line and quarantines the rest.
TABLE_KEYS = {
    "ratings": [MOVIE_ID, USER_ID],
    "movies": [MOVIE_ID],
    "probe": [MOVIE_ID, USER_ID],
    "qualifying": [MOVIE_ID, USER_ID],
}

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


@dataclass(frozen=True)
class RatingScale:
    low: float
    high: float
    step: float

    def valid(self, rating: Column) -> Column:
        steps = (rating - F.lit(self.low)) / F.lit(self.step)
        return (rating >= self.low) & (rating <= self.high) & (steps == F.floor(steps))

    def check_sql(self, column: str = RATING) -> str:
        return (f"{column} >= {self.low} AND {column} <= {self.high} AND "
                f"({column} - {self.low}) / {self.step} = floor(({column} - {self.low}) / {self.step})")


NETFLIX_SCALE = RatingScale(1.0, 5.0, 1.0)
ML_INTEGER_SCALE = RatingScale(1.0, 5.0, 1.0)
ML_HALF_STAR_SCALE = RatingScale(0.5, 5.0, 0.5)


# --- small expression helpers ----------------------------------------------------------------

def _positive_id(text: Column) -> Column:
    """An id: digits only (no sign, no blanks), fitting an int, above zero; else null."""
    value = text.try_cast("int")
    plain = (F.substring(text, 1, 1).between("0", "9")
             & F.substring(text, -1, 1).between("0", "9"))
    return F.when(plain & (value > 0), value)


def _iso_date(text: Column) -> Column:
    """A ``YYYY-MM-DD`` date, or null."""
    shaped = (F.length(text) == 10) & (F.substring(text, 5, 1) == "-") & (F.substring(text, 8, 1) == "-")
    return F.when(shaped, text.try_cast("date"))


# 9999-12-31T23:59:59Z: a later "timestamp" (milliseconds, or any huge number) is no date in
# seconds, and converting it would overflow Spark's date type and fail the whole job.
MAX_UNIX_SECONDS = 253_402_300_799


def _unix_day(text: Column) -> Column:
    """The UTC date of a unix timestamp in seconds, or null."""
    seconds = text.try_cast("bigint")
    return F.when(seconds.between(0, MAX_UNIX_SECONDS),
                  F.date_from_unix_date(F.floor(seconds / 86400).cast("int")))


def _finish(df: DataFrame, table: str, reason: Column, header: Column | None = None) -> DataFrame:
    """Assemble the standard output: table columns, lineage, outcome and reason.

    Each step is its own projection so that no expression is copied into the next: the
    optimizer keeps a projection apart when inlining would repeat a costly expression."""
    # A clean line of a table without text columns is digits and punctuation, so there only
    # lines with a reason need the (per-byte) UTF-8 and blank checks; titles always do.
    has_text = any(kind == "string" for _, kind in TABLE_COLUMNS[table])
    df = df.withColumn("_parsed", reason)
    df = df.withColumn("_reason", F.when(~F.col("located"), F.lit("unlocated"))
                       .when(F.col("_parsed").isNull() & F.lit(not has_text),
                             F.lit(None).cast("string"))
                       .when(~F.is_valid_utf8("value"), F.lit("undecodable"))
                       .when(F.trim("value") == "", F.lit("blank_line"))
                       .otherwise(F.col("_parsed")))
    found = F.col("_reason")
    trailing_blank = (found == "blank_line") & (
        F.col(LINE_NO) > F.coalesce(F.col("last_content_line"), F.lit(0)))
    header = header if header is not None else F.lit(False)
    df = df.withColumn("outcome", F.when(trailing_blank, F.lit(SKIPPED))
                       .when(header & found.isNull(), F.lit(HEADER))
                       .when(found.isNull(), F.lit(ROW))
                       .otherwise(F.lit(QUARANTINED)))
    return df.select(
        *[F.col(name).cast(kind).alias(name) for name, kind in TABLE_COLUMNS[table]],
        SOURCE_FILE, LINE_NO, F.col("value").alias("line"), "outcome",
        F.when(F.col("outcome") == QUARANTINED, found).alias("reason"),
    )


def _first(*checks: tuple[Column, str]) -> Column:
    """The reason of the first failing check, or null."""
    expr = None
    for failed, reason in checks:
        expr = F.when(failed, F.lit(reason)) if expr is None else expr.when(failed, F.lit(reason))
    return expr.otherwise(F.lit(None).cast("string"))


def _field_count(expected: int) -> tuple[tuple[Column, str], tuple[Column, str]]:
    count = F.size("_f")
    return ((count < expected, "missing_fields"), (count > expected, "extra_fields"))


def _with_fields(df: DataFrame, separator: str) -> DataFrame:
    """The line split on ``separator`` (a regex) as column ``_f``."""
    return df.withColumn("_f", F.split(F.col("value"), separator, -1))


def _field(i: int) -> Column:
    return F.get(F.col("_f"), i)


# --- Netflix Prize -------------------------------------------------------------------------

def _with_netflix_header(df: DataFrame) -> DataFrame:
    """``_movie``: id of the governing header (null if none or invalid); ``_own``: this line's
    id when it is itself a valid header."""
    def header_id(text: Column) -> Column:
        text = F.rtrim(text)
        return _positive_id(F.trim(F.substring(text, F.lit(1), F.length(text) - 1)))

    return df.withColumns({
        "_movie": header_id(F.col("header")),
        "_own": F.when(F.col("is_header"), header_id(F.col("value"))),
    })


def _netflix_reason(*checks: tuple[Column, str]) -> Column:
    return F.when(F.col("is_header"), F.when(F.col("_own").isNull(), F.lit("bad_header"))).otherwise(
        _first((F.col("_movie").isNull(), "no_header"), *checks))


def parse_netflix_ratings(df: DataFrame) -> DataFrame:
    """``training_set/mv_*.txt`` and ``combined_data_*.txt``: ``CustomerID,Rating,YYYY-MM-DD``
    under ``MovieID:`` headers."""
    df = _with_fields(_with_netflix_header(df), ",")
    stars = _field(1)
    df = df.withColumns({
        USER_ID: _positive_id(_field(0)), MOVIE_ID: F.col("_movie"),
        RATING: F.when((F.length(stars) == 1) & stars.between("1", "5"), stars.cast("int")),
        RATED_ON: _iso_date(_field(2)),
    })
    reason = _netflix_reason(*_field_count(3), (F.col(USER_ID).isNull(), "bad_user_id"),
                             (F.col(RATING).isNull(), "bad_rating"),
                             (F.col(RATED_ON).isNull(), "bad_date"))
    return _finish(df, "ratings", reason, F.col("is_header"))


def parse_netflix_probe(df: DataFrame) -> DataFrame:
    """``probe.txt``: ``CustomerID`` lines under ``MovieID:`` headers."""
    df = _with_fields(_with_netflix_header(df), ",")
    df = df.withColumns({USER_ID: _positive_id(_field(0)), MOVIE_ID: F.col("_movie")})
    reason = _netflix_reason(*_field_count(1), (F.col(USER_ID).isNull(), "bad_user_id"))
    return _finish(df, "probe", reason, F.col("is_header"))


def parse_netflix_qualifying(df: DataFrame) -> DataFrame:
    """``qualifying.txt``: ``CustomerID,YYYY-MM-DD`` lines under ``MovieID:`` headers."""
    df = _with_fields(_with_netflix_header(df), ",")
    df = df.withColumns({USER_ID: _positive_id(_field(0)), MOVIE_ID: F.col("_movie"),
                         RATED_ON: _iso_date(_field(1))})
    reason = _netflix_reason(*_field_count(2), (F.col(USER_ID).isNull(), "bad_user_id"),
                             (F.col(RATED_ON).isNull(), "bad_date"))
    return _finish(df, "qualifying", reason, F.col("is_header"))


def latin1(value: Column) -> Column:
    """Text of an ISO-8859-1 line: Spark's text reader keeps the raw bytes, so re-decode them."""
    return F.decode(value.cast("binary"), "ISO-8859-1")


def utf8_or_latin1(value: Column) -> Column:
    """UTF-8 where the bytes are valid UTF-8, else ISO-8859-1 (MovieLens .dat files vary)."""
    return F.when(F.is_valid_utf8(value), value).otherwise(latin1(value))


def parse_netflix_titles(df: DataFrame) -> DataFrame:
    """``movie_titles.txt``: ISO-8859-1 ``MovieID,Year,Title``; only the first two commas split;
    the year may be ``NULL``."""
    pattern = "^([^,]*),([^,]*),(.*)$"
    df = df.withColumn("value", latin1(F.col("value"))).withColumns({
        "_matched": F.col("value").rlike(pattern),
        MOVIE_ID: _positive_id(F.regexp_extract("value", pattern, 1)),
        "_year": F.regexp_extract("value", pattern, 2),
        TITLE: F.regexp_extract("value", pattern, 3),
        GENRES: F.lit(None).cast("string"),
    })
    year_ok = (F.length("_year") == 4) & F.col("_year").try_cast("int").between(1800, 2100)
    df = df.withColumn(YEAR, F.when(year_ok, F.col("_year").try_cast("int")))
    reason = _first(
        (~F.col("_matched"), "missing_fields"),
        (F.col(MOVIE_ID).isNull(), "bad_movie_id"),
        ((F.col("_year") != "NULL") & F.col(YEAR).isNull(), "bad_year"),
        (F.trim(TITLE) == "", "missing_title"),
    )
    return _finish(df, "movies", reason)


# --- MovieLens ------------------------------------------------------------------------------

def _movielens_ratings(df: DataFrame, separator: str, scale: RatingScale,
                       header: Column | None = None) -> DataFrame:
    df = _with_fields(df, separator)
    df = df.withColumns({
        USER_ID: _positive_id(_field(0)), MOVIE_ID: _positive_id(_field(1)),
        RATING: _field(2).try_cast("double"), RATED_ON: _unix_day(_field(3)),
    })
    reason = _first(
        *_field_count(4),
        (F.col(USER_ID).isNull(), "bad_user_id"),
        (F.col(MOVIE_ID).isNull(), "bad_movie_id"),
        (~F.coalesce(scale.valid(F.col(RATING)), F.lit(False)), "bad_rating"),
        (F.col(RATED_ON).isNull(), "bad_timestamp"),
    )
    if header is not None:
        reason = F.when(header, F.lit(None).cast("string")).otherwise(reason)
    return _finish(df, "ratings", reason, header)


def parse_ml100k_ratings(df: DataFrame) -> DataFrame:
    """MovieLens 100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>unix_ts``."""
    return _movielens_ratings(df, "\t", ML_INTEGER_SCALE)


def parse_mldat_ratings(df: DataFrame) -> DataFrame:
    """MovieLens 1M/10M ``ratings.dat``: ``user::movie::rating::unix_ts``."""
    return _movielens_ratings(df, "::", ML_HALF_STAR_SCALE)


def parse_mlcsv_ratings(df: DataFrame) -> DataFrame:
    """MovieLens 20M/25M/latest ``ratings.csv`` with its ``userId,...`` header line."""
    header = (F.col(LINE_NO) == 1) & F.col("value").startswith("userId,")
    return _movielens_ratings(df, ",", ML_HALF_STAR_SCALE, header)


def _year_in_title(title: Column) -> Column:
    return F.regexp_extract(title, "\\((\\d{4})\\)\\s*$", 1).try_cast("int")


def _movie_checks(expected_fields: int | None = None) -> list[tuple[Column, str]]:
    checks = list(_field_count(expected_fields)) if expected_fields else []
    return checks + [(F.col(MOVIE_ID).isNull(), "bad_movie_id"),
                     (F.coalesce(F.trim(TITLE), F.lit("")) == "", "missing_title")]


def parse_ml100k_items(df: DataFrame) -> DataFrame:
    """MovieLens 100K ``u.item``: ISO-8859-1, ``id|title|release|video|url|19 genre flags``."""
    df = _with_fields(df.withColumn("value", latin1(F.col("value"))), "\\|")
    names = F.array(*[F.lit(g) for g in ML100K_GENRES])
    flags = F.slice(F.col("_f"), 6, len(ML100K_GENRES))
    genres = F.array_join(F.filter(
        F.transform(F.sequence(F.lit(0), F.lit(len(ML100K_GENRES) - 1)),
                    lambda i: F.when(F.get(flags, i) == "1", F.get(names, i))),
        lambda g: g.isNotNull()), "|")
    release_year = F.substring(_field(2), -4, 4).try_cast("int")
    df = df.withColumns({MOVIE_ID: _positive_id(_field(0)), TITLE: _field(1), GENRES: genres})
    df = df.withColumn(YEAR, F.coalesce(_year_in_title(F.col(TITLE)), release_year))
    return _finish(df, "movies", _first(*_movie_checks(5 + len(ML100K_GENRES))))


def parse_mldat_movies(df: DataFrame) -> DataFrame:
    """MovieLens 1M/10M ``movies.dat``: ``id::title::genres``."""
    df = _with_fields(df.withColumn("value", utf8_or_latin1(F.col("value"))), "::")
    df = df.withColumns({MOVIE_ID: _positive_id(_field(0)), TITLE: _field(1),
                         GENRES: _field(2)})
    df = df.withColumn(YEAR, _year_in_title(F.col(TITLE)))
    return _finish(df, "movies", _first(*_movie_checks(3)))


_CSV_MOVIE = '^([^,"]*),(?:"((?:[^"]|"")*)"|([^,"]*)),([^,"]*)$'


def parse_mlcsv_movies(df: DataFrame) -> DataFrame:
    """MovieLens ``movies.csv``: header, then ``movieId,title,genres``; titles with commas are
    double-quoted with ``""`` escapes."""
    header = (F.col(LINE_NO) == 1) & F.col("value").startswith("movieId,")
    quoted = F.regexp_extract("value", _CSV_MOVIE, 2)
    df = df.withColumns({
        "_matched": F.col("value").rlike(_CSV_MOVIE),
        MOVIE_ID: _positive_id(F.regexp_extract("value", _CSV_MOVIE, 1)),
        TITLE: F.when(quoted != "", F.regexp_replace(quoted, '""', '"')).otherwise(
            F.regexp_extract("value", _CSV_MOVIE, 3)),
        GENRES: F.regexp_extract("value", _CSV_MOVIE, 4),
    })
    df = df.withColumn(YEAR, _year_in_title(F.col(TITLE)))
    reason = F.when(header, F.lit(None).cast("string")).otherwise(
        _first((~F.col("_matched"), "bad_csv_row"), *_movie_checks()))
    return _finish(df, "movies", reason, header)


# --- after parsing --------------------------------------------------------------------------

def check_dates(parsed: DataFrame, earliest, latest) -> DataFrame:
    """Quarantine rows dated outside [``earliest``, ``latest``] as ``date_out_of_range``: a
    well-formed date can still be implausible (a timestamp in milliseconds read as seconds, a
    typo in the year, a clock in the future)."""
    if RATED_ON not in parsed.columns:
        return parsed
    outside = (F.col("outcome") == ROW) & ~F.col(RATED_ON).between(
        F.lit(earliest).cast("date"), F.lit(latest).cast("date"))
    return (parsed
            .withColumn("reason", F.when(outside, F.lit("date_out_of_range"))
                        .otherwise(F.col("reason")))
            .withColumn("outcome", F.when(outside, F.lit(QUARANTINED)).otherwise(F.col("outcome"))))


def repeated_keys(parsed: DataFrame, table: str, partitions: int) -> DataFrame:
    """Keys that more than one row of ``parsed`` holds (none, in a clean corpus).

    The keys are shuffled as they are, in ``partitions`` parts, and counted there: nearly every
    key is unique, so counting on the map side first would only build a hash table as large as
    the input; and only the key columns travel."""
    keys = TABLE_KEYS[table]
    return (parsed.where(F.col("outcome") == ROW).select(*keys)
            .repartition(partitions, *keys)
            .groupBy(*keys).count()
            .where(F.col("count") > 1)
            .select(*keys))


def first_places(parsed: DataFrame, table: str, repeated: DataFrame) -> DataFrame:
    """Each of the ``repeated`` keys with the place of its first row in ``parsed`` (``_first``:
    source file, then line number). Persisted and counted first, ``repeated`` is joined the
    way its real size allows: broadcast when it is small, as it nearly always is."""
    keys = TABLE_KEYS[table]
    return (parsed.where(F.col("outcome") == ROW)
            .join(repeated, on=keys)
            .groupBy(*keys)
            .agg(F.min(F.struct(SOURCE_FILE, LINE_NO)).alias("_first")))


def flag_duplicates(parsed: DataFrame, table: str, first: DataFrame | None,
                    existing_keys: DataFrame | None = None) -> DataFrame:
    """Quarantine repeated keys as ``duplicate``: the first line (by file, then line number)
    keeps the key (``first`` from :func:`first_places`; None when no key repeats); a key
    already in the table (``existing_keys``) keeps the table's row. Joins instead of a window
    over every row: the repeated keys are few, so the big side is not shuffled."""
    keys = TABLE_KEYS[table]
    is_row = F.col("outcome") == ROW
    flagged = parsed
    duplicate = F.lit(False)
    if first is not None:
        flagged = flagged.join(first, on=keys, how="left")
        duplicate = is_row & F.col("_first").isNotNull() & (
            F.struct(SOURCE_FILE, LINE_NO) != F.col("_first"))
    if existing_keys is not None:
        marked = existing_keys.select(*keys).distinct().withColumn("_in_table", F.lit(True))
        flagged = flagged.join(marked, on=keys, how="left")
        duplicate = duplicate | (is_row & F.coalesce(F.col("_in_table"), F.lit(False)))
    flagged = flagged.withColumn("_dup", duplicate)
    return (flagged
            .withColumn("reason", F.when(F.col("_dup"), F.lit("duplicate")).otherwise(F.col("reason")))
            .withColumn("outcome", F.when(F.col("_dup"), F.lit(QUARANTINED)).otherwise(F.col("outcome")))
            .select(*parsed.columns))
