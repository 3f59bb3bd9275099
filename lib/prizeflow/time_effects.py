"""Time-aware baseline biases (issue 31, item 1), fitted in Spark: groupBy passes over the ratings,
the small tables (a row per user, per movie, per movie and time bin) joined by broadcast.

For user u, movie i and day t (days since 1970-01-01 of ``rated_on``):

    baseline(u, i, t) = mu + b_u + alpha_u * dev_u(t) + b_i + b_i,bin(t)
    dev_u(t)          = sign(t - tbar_u) * |t - tbar_u| ** BETA   (tbar_u: u's mean rating day)
    bin(t)            = clip(floor((t - first_day) / bin_days), 0, bins - 1)

(Koren, "Collaborative filtering with temporal dynamics", 2009: a movie's popularity drifts
over months, a user's rating scale drifts around the user's mean date.) A row without a day is
taken at the latest day of the training data (the last bin), as a request without a date is.

The fit alternates ridge passes as :func:`prizeflow.baselines.fit_biases` does: b_i as the
shrunk mean of its residuals (``reg``); b_i,bin likewise per (movie, bin) (``reg_bin``); then
(b_u, alpha_u) per user from a 2 x 2 ridge system (``reg`` on b_u, ``reg_alpha`` on alpha_u).
The ratings are scanned once for the users' days and twice per pass: the two movie tables both
come from one aggregation per (movie, bin) cell. Nothing O(ratings) reaches the driver: it
receives mu and the day range.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from prizeflow.baselines import materialised
from prizeflow.columns import DAY, MOVIE_ID, RATED_ON, RATING, USER_ID
from prizeflow.time_baseline import BETA

BIN = "time_bin"
# Per user beside b_user: the mean rating day and the drift (the model's ``user_time`` columns).
USER_TIME = ("mean_day", "alpha")
# The columns scoring joins in beside the pairs' own (and drops again).
_JOINED = (BIN, "b_user", *USER_TIME, "b_movie", "b_bin")
_CELL = "_pf_cell"  # movie_id * bins + bin, while fitting


def day_number(column: Column) -> Column:
    """Days since 1970-01-01 of a date column."""
    return F.datediff(column, F.lit("1970-01-01").cast("date"))


@dataclass
class TimeBiases:
    """mu, the per-user (b_user, mean_day, alpha), per-movie (b_movie) and per-(movie, bin)
    (b_bin) tables, and the bins; ids or bins missing from a table add 0."""
    mean: float
    users: DataFrame  # user_id, b_user, mean_day, alpha
    movies: DataFrame  # movie_id, b_movie
    movie_bins: DataFrame  # movie_id, time_bin, b_bin
    first_day: int
    last_day: int
    bins: int

    def bin_of(self, day: Column) -> Column:
        return time_bin(day, self.first_day, self.last_day, self.bins)

    def with_baseline(self, pairs: DataFrame, column: str = "baseline") -> DataFrame:
        return with_time_baseline(pairs, self, column)

    def movie_bin_array(self, movie_ids):
        """The (movie, bin) biases as a float64 (movies, bins) array whose rows follow
        ``movie_ids`` (zeros where a movie has no bias for a bin): O(movies x bins)."""
        import numpy as np

        from prizeflow.factors import lookup

        table = self.movie_bins.toPandas()
        out = np.zeros((len(movie_ids), self.bins))
        rows, known = lookup(np.asarray(movie_ids, dtype=np.int64),
                             table[MOVIE_ID].to_numpy(dtype=np.int64))
        out[rows[known], table[BIN].to_numpy()[known]] = table["b_bin"].to_numpy()[known]
        return out


def time_bin(day: Column, first_day: int, last_day: int, bins: int) -> Column:
    """The bin of a day: ``bins`` equal spans of [first_day, last_day]; days outside go to the
    first or last bin, a missing day to the last."""
    width = (last_day - first_day + 1) / bins
    step = F.floor((F.coalesce(day, F.lit(last_day)) - F.lit(first_day)) / F.lit(width))
    return F.least(F.greatest(step, F.lit(0)), F.lit(bins - 1)).cast("int")


def deviation(day: Column, mean_day: Column) -> Column:
    gap = day - mean_day
    return F.signum(gap) * F.pow(F.abs(gap), F.lit(BETA))


def with_day(ratings: DataFrame) -> DataFrame:
    """The rows with a ``day`` column from ``rated_on``."""
    return ratings.withColumn(DAY, day_number(F.col(RATED_ON)))


def fit_time_biases(ratings: DataFrame, bins: int, reg: float, reg_bin: float,
                    reg_alpha: float, passes: int, mean: float | None = None) -> TimeBiases:
    """Fit the biases on (user_id, movie_id, rating, day) rows (cache them first: they are
    scanned once, then twice per pass); ``mean``: the ratings' mean when the caller has it (the
    model's mu, to the last bit), else computed here."""
    # One scan for each user's day statistics, which also give the day range and the mean.
    per_user = materialised(ratings.groupBy(USER_ID).agg(
        F.count(F.lit(1)).alias("n"), F.count(DAY).alias("n_day"),
        F.sum(DAY).alias("sum_day"), F.min(DAY).alias("first_day"),
        F.max(DAY).alias("last_day"), F.sum(RATING).alias("sum_rating")))
    stats = per_user.agg(F.sum("n"), F.min("first_day"), F.max("last_day"),
                         F.sum("sum_rating")).first()
    if not stats[0]:
        raise ValueError("cannot fit a baseline on an empty training set")
    if stats[1] is None:
        raise ValueError("cannot fit time effects: no training rating has a date")
    mu = float(stats[3]) / float(stats[0]) if mean is None else float(mean)
    first_day, last_day = int(stats[1]), int(stats[2])
    # A rating without a day counts at the latest day, here as when it is scored. Day numbers
    # are integers, so these sums are exact and the mean is Spark's avg to the last bit.
    mean_days = per_user.select(
        USER_ID, ((F.coalesce(F.col("sum_day"), F.lit(0)).cast("double")
                   + (F.col("n") - F.col("n_day")) * F.lit(float(last_day)))
                  / F.col("n")).alias("mean_day"))
    day = F.coalesce(F.col(DAY), F.lit(last_day))
    # Each (movie, bin) cell as one long key: one group-by key per rating, and one broadcast
    # join for b_movie + b_bin in the users' scan instead of two. (Measured with the scan
    # fusion, not apart from it: BENCHMARKS.md, issue 30 item 4.)
    rows = (ratings.join(F.broadcast(mean_days), USER_ID, "left")
            .select(USER_ID, (F.col(RATING) - F.lit(mu)).alias("centered"),
                    deviation(day, F.col("mean_day")).alias("dev"),
                    (F.col(MOVIE_ID).cast("long") * F.lit(bins)
                     + time_bin(F.col(DAY), first_day, last_day, bins)).alias(_CELL)))
    users = movies = movie_bins = None
    for _ in range(passes):
        if users is None:
            with_users, user_part = rows, F.lit(0.0)
        else:
            with_users = rows.join(F.broadcast(users), USER_ID, "left")
            user_part = (F.coalesce(F.col("b_user"), F.lit(0.0))
                         + F.coalesce(F.col("alpha"), F.lit(0.0)) * F.col("dev"))
        # One scan per pass for both movie tables: b_movie and then b_bin each take the sum
        # of (centered - user part) over a (movie, bin) cell less the other table's value
        # times the cell's count, so the cells' sums and counts (a row per movie and bin)
        # give both, as two scans of the ratings would.
        cells = materialised(
            with_users.groupBy(_CELL)
            .agg(F.sum(F.col("centered") - user_part).alias("total"),
                 F.count(F.lit(1)).alias("n"))
            .select(F.expr(f"cast({_CELL} div {bins} as int)").alias(MOVIE_ID),
                    F.expr(f"cast(pmod({_CELL}, {bins}) as int)").alias(BIN), "total", "n"))
        if movie_bins is None:
            old_bin = F.lit(0.0)
        else:
            cells = cells.join(movie_bins, [MOVIE_ID, BIN], "left")
            old_bin = F.coalesce(F.col("b_bin"), F.lit(0.0))
        movies = materialised(
            cells.groupBy(MOVIE_ID)
            .agg((F.sum(F.col("total") - F.col("n") * old_bin)
                  / (F.lit(reg) + F.sum("n"))).alias("b_movie")))
        movie_bins = materialised(
            cells.join(F.broadcast(movies), MOVIE_ID)
            .select(MOVIE_ID, BIN, ((F.col("total") - F.col("n") * F.col("b_movie"))
                                    / (F.lit(reg_bin) + F.col("n"))).alias("b_bin")))
        item = (movie_bins.join(F.broadcast(movies), MOVIE_ID)
                .select((F.col(MOVIE_ID).cast("long") * F.lit(bins) + F.col(BIN)).alias(_CELL),
                        (F.col("b_movie") + F.col("b_bin")).alias("b_item")))
        residual = F.col("centered") - F.col("b_item")  # every rating's cell has a value
        sums = (rows.join(F.broadcast(item), _CELL)
                .groupBy(USER_ID)
                .agg(F.count(F.lit(1)).alias("n"), F.sum("dev").alias("s_d"),
                     F.sum(F.col("dev") * F.col("dev")).alias("s_dd"),
                     F.sum(residual).alias("s_r"), F.sum(residual * F.col("dev")).alias("s_rd")))
        # [n + reg, s_d; s_d, s_dd + reg_alpha] [b_u; alpha_u] = [s_r; s_rd]
        a11, a12 = F.col("n") + F.lit(reg), F.col("s_d")
        a22 = F.col("s_dd") + F.lit(reg_alpha)
        det = a11 * a22 - a12 * a12
        users = materialised(
            sums.join(F.broadcast(mean_days), USER_ID)
            .select(USER_ID, ((a22 * F.col("s_r") - a12 * F.col("s_rd")) / det).alias("b_user"),
                    "mean_day",
                    ((a11 * F.col("s_rd") - a12 * F.col("s_r")) / det).alias("alpha")))
    assert users is not None and movies is not None and movie_bins is not None
    return TimeBiases(mu, users, movies, movie_bins, first_day, last_day, bins)


def with_time_baseline(pairs: DataFrame, biases: TimeBiases,
                       column: str = "baseline") -> DataFrame:
    """Add the time-aware baseline for each (user_id, movie_id, day) row; unknown ids and bins
    add 0, a missing day is the latest day."""
    clash = set(pairs.columns) & {*_JOINED, column}
    if clash:
        raise ValueError(f"the pairs to score already have columns {sorted(clash)}")
    day = F.coalesce(F.col(DAY), F.lit(biases.last_day))
    joined = (pairs.withColumn(BIN, biases.bin_of(F.col(DAY)))
              .join(F.broadcast(biases.users), USER_ID, "left")
              .join(F.broadcast(biases.movies), MOVIE_ID, "left")
              .join(F.broadcast(biases.movie_bins), [MOVIE_ID, BIN], "left"))
    drift = F.coalesce(F.col("alpha") * deviation(day, F.col("mean_day")), F.lit(0.0))
    value = (F.lit(biases.mean) + F.coalesce(F.col("b_user"), F.lit(0.0)) + drift
             + F.coalesce(F.col("b_movie"), F.lit(0.0)) + F.coalesce(F.col("b_bin"), F.lit(0.0)))
    return joined.withColumn(column, value).drop(*_JOINED)
