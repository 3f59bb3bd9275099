"""Implicit feedback: what *which* movies a user rated says about the user's ratings.

The blend's fourth part is an asymmetric user term (Paterek's NSVD; the user side of Koren's
SVD++): the user is described not by factors of their own but by the movies they rated,

    implicit_term(u, i) = z_u . w_i,    z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j,

N(u) the movies in u's history: the movies u rated in the training part and, where the lake
has them, u's ``qualifying`` pairs (rated, the rating hidden: :func:`prizeflow.data.with_unrated`),
as the Prize's teams used them. The two movie-side arrays are learned in two steps:

1. y_j: the item factors of an implicit-feedback ALS (MLlib's ALS with ``implicitPrefs``, Hu,
   Koren and Volinsky) on the binary who-rated-what matrix of N(u), from a hash
   sample of the users when ``train.implicit.sample_users`` < 1 (the item factors need many
   users per movie, not every user);
2. w_i: per movie, a ridge regression of its raters' baseline residuals on their z_u:
   (sum z_u z_u' + ridge I) w_i = sum z_u r_ui (the pairs without a rating count in z_u only).

Step 2 at cluster scale: the residuals are hash-partitioned by user and sorted, so a task sees
each of its users whole; it computes z_u (y travels with the task: movies x rank floats) and
adds each rating's z_u z_u' and z_u r_ui into its own per-movie sums; the sums (one row per
movie per task: O(movies x rank^2), never O(ratings)) are added up per movie and solved in a
second set of tasks. Only w (movies x rank) reaches the driver. Measured effects and costs are
in BENCHMARKS.md ("Implicit feedback").
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from prizeflow import partitions
from prizeflow.columns import MOVIE_ID, USER_ID
from prizeflow.factors import ImplicitTerm, lookup, user_vectors
from prizeflow.splits import unit_hash

CHUNK_ROWS = 1_000_000  # rows turned into per-movie sums at once


def item_factors(pairs: DataFrame, movie_ids: np.ndarray, rank: int, reg_param: float,
                 alpha: float, max_iter: int, sample_users: float, seed: int,
                 num_blocks: int) -> np.ndarray:
    """y: (movies, rank) float32 in ``movie_ids`` order, zeros for a movie ALS did not see.
    ``pairs``: (user_id, movie_id) rated pairs, each once."""
    rated = pairs.select(USER_ID, MOVIE_ID)
    if sample_users < 1.0:
        rated = rated.where(unit_hash(seed, USER_ID) < F.lit(float(sample_users)))
    als = ALS(rank=rank, regParam=float(reg_param), alpha=float(alpha), maxIter=max_iter,
              implicitPrefs=True, userCol=USER_ID, itemCol=MOVIE_ID, ratingCol="_pf_rated",
              seed=seed, numUserBlocks=num_blocks, numItemBlocks=num_blocks)
    fitted = als.fit(rated.withColumn("_pf_rated", F.lit(1.0).cast("float")))
    # O(movies x rank) to the driver: the model's own size.
    rows = fitted.itemFactors.collect()
    out = np.zeros((len(movie_ids), rank), dtype=np.float32)
    if rows:
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        pos, found = lookup(np.asarray(movie_ids, dtype=np.int64), ids)
        vectors = np.array([r["features"] for r in rows], dtype=np.float32)
        out[pos[found]] = vectors[found]
    return out


def movie_weights(residuals: DataFrame, movie_ids: np.ndarray, factors: np.ndarray,
                  ridge: float, parallelism: int,
                  chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """w: (movies, rank) float32, the per-movie ridge of step 2. ``residuals``: (user_id,
    movie_id, residual) of the training part and N(u)'s pairs without a rating (residual
    null), so that each user's rows are all of N(u). One summing
    task per core: each streams its users' rows and hands on one row per movie it saw
    (movies x rank^2 doubles, about 57 MB at rank 20 for the Prize's movies), so what the sums
    shuffle grows with the cores, never with the ratings."""
    import pyarrow as pa

    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    rank = factors.shape[1]
    tasks = max(1, parallelism)
    by_user = (residuals.select(USER_ID, MOVIE_ID, F.col("residual").cast("double"))
               .repartition(tasks, USER_ID).sortWithinPartitions(USER_ID))

    def sums(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sums = _MovieSums(movie_ids, factors, chunk_rows)
        for batch in batches:
            sums.add(batch.column(0).to_numpy(zero_copy_only=False),
                     batch.column(1).to_numpy(zero_copy_only=False),
                     batch.column(2).to_numpy(zero_copy_only=False))
        yield from sums.finish()

    def solve(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        pos = table.column("pos").to_numpy()
        grams = np.frombuffer(b"".join(table.column("gram").to_pylist()), dtype=np.float64)
        rhs = np.frombuffer(b"".join(table.column("rhs").to_pylist()), dtype=np.float64)
        grams, rhs = grams.reshape(-1, rank, rank), rhs.reshape(-1, rank)
        movies, inverse = np.unique(pos, return_inverse=True)
        total_gram = np.zeros((len(movies), rank, rank))
        total_rhs = np.zeros((len(movies), rank))
        np.add.at(total_gram, inverse, grams)
        np.add.at(total_rhs, inverse, rhs)
        weights = np.linalg.solve(total_gram + ridge * np.eye(rank), total_rhs[..., None])[..., 0]
        yield pa.RecordBatch.from_arrays(
            [pa.array(movies.astype(np.int32)),
             pa.array([w.astype(np.float32).tobytes() for w in weights], type=pa.binary())],
            names=["pos", "weights"])

    per_task = by_user.mapInArrow(sums, "pos int, gram binary, rhs binary")
    solved = per_task.repartition(max(1, parallelism), "pos").mapInArrow(
        solve, "pos int, weights binary")
    out = np.zeros((len(movie_ids), rank), dtype=np.float32)
    for row in solved.collect():  # one row per movie: O(movies x rank)
        out[row["pos"]] = np.frombuffer(row["weights"], dtype=np.float32)
    return out


class _MovieSums:
    """One task's per-movie sums of z_u z_u' and z_u r_ui over rows sorted by user. Arrow
    batches (10,000 rows) are gathered into chunks of about ``chunk_rows`` whole users before
    the sums: a chunk's cost is a loop over the movies it holds, which batch-sized chunks
    repeated 100 times as often (the first version, stopped after 6 minutes at 100M)."""

    def __init__(self, movie_ids: np.ndarray, factors: np.ndarray, chunk_rows: int) -> None:
        self.movie_ids = movie_ids
        self.chunk_rows = chunk_rows
        self.factors = factors
        rank = factors.shape[1]
        self.gram = np.zeros((len(movie_ids), rank, rank))
        self.rhs = np.zeros((len(movie_ids), rank))
        self.seen = np.zeros(len(movie_ids), dtype=bool)
        self.waiting: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.rows_waiting = 0

    def add(self, users: np.ndarray, movies: np.ndarray, residuals: np.ndarray) -> None:
        if len(users) == 0:
            return
        self.waiting.append((users, movies, residuals))
        self.rows_waiting += len(users)
        if self.rows_waiting >= self.chunk_rows:
            users, movies, residuals = (np.concatenate(a) for a in zip(*self.waiting))
            # The last user may go on in the next batch: it waits.
            last = int(np.searchsorted(users, users[-1], side="left"))
            self.waiting = [(users[last:], movies[last:], residuals[last:])]
            self.rows_waiting = len(users) - last
            self._chunk(users[:last], movies[:last], residuals[:last])

    def _chunk(self, users, movies, residuals) -> None:
        if len(users) == 0:
            return
        owners, owner = np.unique(users, return_inverse=True)
        pos, found = lookup(self.movie_ids, movies)
        z = user_vectors(self.factors, owner, np.where(found, pos, -1), len(owners))[owner]
        # A pair without a rating (NaN) is in its user's z only: it has no residual to regress.
        rated = found & ~np.isnan(residuals)
        pos, z, residuals = pos[rated], z[rated], residuals[rated]
        order = np.argsort(pos, kind="stable")
        pos, z, residuals = pos[order], z[order], residuals[order]
        bounds = np.flatnonzero(np.diff(pos)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(pos)]])
        for a, b in zip(starts, stops):
            block = z[a:b]
            self.gram[pos[a]] += block.T @ block
            self.rhs[pos[a]] += block.T @ residuals[a:b]
        self.seen[pos] = True

    def finish(self):
        import pyarrow as pa

        if self.waiting:
            self._chunk(*(np.concatenate(a) for a in zip(*self.waiting)))
            self.waiting = []
        rows = np.flatnonzero(self.seen)
        if len(rows) == 0:
            return
        yield pa.RecordBatch.from_arrays(
            [pa.array(rows.astype(np.int32)),
             pa.array([self.gram[r].tobytes() for r in rows], type=pa.binary()),
             pa.array([self.rhs[r].tobytes() for r in rows], type=pa.binary())],
            names=["pos", "gram", "rhs"])


def fit(ratings_pairs: DataFrame, residuals: DataFrame, movie_ids: np.ndarray, conf, seed: int,
        num_blocks: int, parallelism: int, unrated: DataFrame | None = None) -> ImplicitTerm:
    """Both steps; ``conf``: the ``train.implicit`` settings; ``unrated``: (user_id,
    movie_id) pairs rated without a known rating, which join N(u) (None: there are none)."""
    if unrated is not None:
        pairs = unrated.select(USER_ID, MOVIE_ID)
        ratings_pairs = ratings_pairs.select(USER_ID, MOVIE_ID).unionByName(pairs)
        residuals = residuals.select(USER_ID, MOVIE_ID, "residual").unionByName(
            pairs.withColumn("residual", F.lit(None).cast(residuals.schema["residual"].dataType)))
    factors = item_factors(ratings_pairs, movie_ids, conf.rank, conf.reg_param, conf.alpha,
                           conf.max_iter, conf.sample_users, seed, num_blocks)
    weights = movie_weights(residuals, movie_ids, factors, conf.ridge, parallelism)
    return ImplicitTerm(factors, weights)
