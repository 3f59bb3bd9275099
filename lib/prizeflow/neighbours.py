"""Item-item neighbourhood on the baseline residuals: movie similarities at cluster scale.

Both parts of the blend model what the baseline mu + b_u + b_i leaves over, r = rating - baseline.
The similarity of two movies is the cosine of their residual vectors (each movie's norm over all
of its raters), shrunk towards 0 when few users rated both:

    s_ij = sum_{u rated i and j} r_ui r_uj / sqrt(N_i N_j) * n_ij / (n_ij + shrink),
    N_i = sum_{u rated i} r_ui^2,   n_ij = number of users who rated both.

Only positive similarities are kept, at most ``keep`` per movie (the model stores them). How the
neighbourhood term uses them is in :class:`prizeflow.factors.Neighbourhood`. Measured on
MovieLens 100K this cosine gives a better blend than one normalised over the common raters only
(0.8988 vs 0.9018 mean 5-fold RMSE, measured with a ``similarity`` mode of
``bench/blend_prototype.py`` that has since been removed: today's tree cannot repeat it) and
needs two sparse products instead of four.

Cost, and why it is never one Spark row per co-rated pair: the work is sum over users of n_u^2
multiply-adds (n_u: the user's ratings), about 4e10 for the Netflix Prize. So

1. each user's ratings are sampled down to about ``max_user_ratings`` by a fixed hash (the
   heavy raters dominate sum n_u^2; MovieLens 100K loses nothing measurable at 300);
2. movies are hashed into B blocks; the sampled ratings cross into Python once, where each
   task packs its own partition's ratings, a few million at a time, into one binary row per
   block (moving rows between the JVM and Python costs about a microsecond each; bytes cost
   next to nothing; no single rating is shuffled);
3. one Spark task per block pair (a, b), a <= b, receives copies of the two blocks' packed rows
   (B copies of the data in all, as bytes), forms the users x movies sparse matrices R
   (residuals) and 1 (rated), computes dot = R_a^T R_b and n = 1_a^T 1_b as sparse products
   (numpy/scipy), the similarities, and each movie's best ``keep`` on that pair;
4. each movie's candidates from its B pairs are merged into its best ``keep`` (2 tasks per
   core, each taking ``merge_movies`` of its movies at a time): one row per movie (ids and
   similarities as bytes), which the driver collects as the model's arrays.

B follows the cluster: the smallest B with B(B+1)/2 >= 2 x the session's parallelism and at most
``rows_per_task`` ratings per task. Every step is deterministic (hash sample, rows sorted before
the products, ties broken by movie id).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from prizeflow import partitions
from prizeflow.columns import MOVIE_ID, USER_ID
from prizeflow.splits import unit_hash

# Ratings a block-pair task holds at most: 5 blocks at 100M. 24M (9 blocks) made each pair
# task smaller but shuffled 9 copies of the sample: scratch 22.1 GB against 19.4, and 45 pair
# tasks took longer than 15; the products are summed over user slices instead
# (PAIR_CHUNK_ROWS), which bounds a task's memory beyond its inputs (BENCHMARKS.md).
ROWS_PER_TASK = 40_000_000
PACK_ROWS = 2_000_000  # ratings a packing task holds at once (about 110 MB in Python)
# Movies a merge task sorts at once: each brings up to (blocks x keep) candidates, so 500 movies
# are at most 1.3M at 100M (5 blocks, keep 500). With 9 blocks, a merge task's whole share at
# once (4,400 movies, 20M candidates) made its Python worker 1.7 GB (BENCHMARKS.md).
MERGE_MOVIES = 500
# Ratings of a block pair whose sparse products are formed at once (see pair_statistics): at
# 24M ratings a pair, 0.38 against 0.75 GB beyond the inputs (bench/bench_pair_memory.py).
PAIR_CHUNK_ROWS = 4_000_000


def sample_per_user(residuals: DataFrame, max_ratings: int | None, seed: int = 7) -> DataFrame:
    """About ``max_ratings`` rows of each user who has more (a fixed hash decides which; the
    number kept is binomial around the cap), every row of the others. The rows stay in their
    partitions: only the per-user counts (O(users), 12 bytes each: 5.8 MB for the Netflix
    Prize's 480,189 users; Spark's broadcast limit is 8 GB) are shuffled and broadcast."""
    if max_ratings is None:
        return residuals
    counts = residuals.groupBy(USER_ID).agg(F.count(F.lit(1)).alias("_pf_n"))
    keep = unit_hash(seed, USER_ID, MOVIE_ID) < F.lit(float(max_ratings)) / F.col("_pf_n")
    return residuals.join(F.broadcast(counts), USER_ID).where(keep).drop("_pf_n")


def block_count(rows: int, parallelism: int, rows_per_task: int = ROWS_PER_TASK) -> int:
    """Movie blocks B: B(B+1)/2 >= 2 x parallelism tasks, each holding at most rows_per_task."""
    blocks = max(1, math.ceil((math.sqrt(16 * parallelism + 1) - 1) / 2))
    return max(blocks, math.ceil(2 * rows / max(1, rows_per_task)), 1)


def pair_statistics(user: np.ndarray, movie: np.ndarray, residual: np.ndarray,
                    in_first: np.ndarray, same: bool, shrink: float, keep: int | None,
                    chunk_rows: int = PAIR_CHUNK_ROWS):
    """Similarities of one block pair from its ratings; ``in_first`` marks the ratings of the
    first block, ``same`` says the pair is a block with itself (the four arrays are reordered
    in place). Returns (movie, other, similarity) arrays: each movie's best ``keep`` with
    positive similarity on this pair. The products are summed over slices of whole users of
    about ``chunk_rows`` ratings, so a task's memory beyond its inputs is a slice's sparse
    matrices and the dense (first movies x second movies) sums, not the whole pair's."""
    # Sorted input makes the float32 sums, and so the similarities, the same on every run.
    # Reordered in place, one array at a time: the caller's arrays are these, so copies would
    # hold a task's ratings twice over.
    order = np.lexsort((movie, user))
    for values in (user, movie, residual, in_first):
        values[:] = values[order]
    del order
    first_ids = np.unique(movie[in_first])
    second_ids = first_ids if same else np.unique(movie[~in_first])
    similarity = np.zeros((len(first_ids), len(second_ids)), dtype=np.float32)
    common = np.zeros_like(similarity)
    first_norms = np.zeros(len(first_ids))
    second_norms = first_norms if same else np.zeros(len(second_ids))
    for start, stop in _user_slices(user, chunk_rows):
        # Both sides' rows are the slice's users, in one numbering.
        starts = np.ones(stop - start, dtype=bool)
        np.not_equal(user[start + 1:stop], user[start:stop - 1], out=starts[1:])
        user_index = np.cumsum(starts, dtype=np.int32) - 1
        rows = (user_index, int(user_index[-1]) + 1, movie[start:stop], residual[start:stop])
        del starts
        first = _side(*rows, in_first[start:stop], first_ids, first_norms)
        second = first if same else _side(*rows, ~in_first[start:stop], second_ids,
                                          second_norms)
        similarity += (first[0].T.tocsr() @ second[0]).toarray()
        common += (first[1].T.tocsr() @ second[1]).toarray()
        del first, second, rows, user_index
    # In place, row then column.
    similarity /= np.maximum(np.sqrt(first_norms), 1e-12).astype(np.float32)[:, None]
    similarity /= np.maximum(np.sqrt(second_norms), 1e-12).astype(np.float32)[None, :]
    shrunk = common + np.float32(shrink)
    # shrink 0 leaves pairs without common raters at 0/0: they stay 0, not NaN.
    np.divide(common, shrunk, out=common, where=shrunk > 0)
    similarity *= common
    del common, shrunk
    if same:
        np.fill_diagonal(similarity, 0.0)
    parts = [_best(first_ids, second_ids, similarity, keep)]
    if not same:
        parts.append(_best(second_ids, first_ids, similarity.T, keep))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _user_slices(user: np.ndarray, chunk_rows: int):
    """(start, stop) of consecutive slices of ``user`` (sorted), each about ``chunk_rows``
    long and cut only where the user changes."""
    start, total = 0, len(user)
    while start < total:
        stop = min(start + max(1, chunk_rows), total)
        if stop < total:
            # Move the cut to the first row of the user the slice would split.
            stop = start + int(np.searchsorted(user[start:], user[stop - 1], side="right"))
        yield start, stop
        start = stop


def _side(user_index: np.ndarray, users: int, movie: np.ndarray, residual: np.ndarray,
          mask: np.ndarray, ids: np.ndarray, norms: np.ndarray):
    """(residuals, ones) as ``users`` x ``ids`` CSR matrices of one slice's rows under ``mask``
    (sorted by user, then movie: each row is already in CSR order, int32, no COO step); adds
    the rows' squared residuals to ``norms``."""
    import scipy.sparse as sp

    indptr = np.zeros(users + 1, dtype=np.int32)
    np.cumsum(np.bincount(user_index[mask], minlength=users), out=indptr[1:])
    index = np.searchsorted(ids, movie[mask]).astype(np.int32)
    values = residual[mask].astype(np.float32)
    norms += np.bincount(index, weights=values.astype(np.float64) ** 2, minlength=len(ids))
    shape = (users, len(ids))
    return (sp.csr_matrix((values, index, indptr), shape=shape),
            sp.csr_matrix((np.ones(len(values), np.float32), index, indptr), shape=shape))


def _best(row_ids: np.ndarray, column_ids: np.ndarray, similarity: np.ndarray,
          keep: int | None):
    """Each row's ``keep`` highest positive similarities, ties at the cut going to the lower
    column ids (columns are in id order); (row id, column id, similarity), in no order."""
    chosen = similarity > 0
    if keep is not None and similarity.shape[1] > keep:
        picked = np.argpartition(-similarity, keep - 1, axis=1)[:, keep - 1:keep]
        threshold = np.take_along_axis(similarity, picked, axis=1)
        above = similarity > threshold
        tied = similarity == threshold
        # Of the columns tied at the threshold, the first ones in id order fill the rows.
        room = keep - above.sum(axis=1)
        taken = above | tied
        crowded = np.nonzero(tied.sum(axis=1) > room)[0]  # rare: more ties than room
        if len(crowded):
            some = tied[crowded]
            taken[crowded] = above[crowded] | (some & (np.cumsum(some, axis=1)
                                                       <= room[crowded, None]))
        chosen &= taken
    rows, columns = np.nonzero(chosen)
    return row_ids[rows], column_ids[columns], similarity[rows, columns].astype(np.float32)


def _bytes(values: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def _array(blob: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(blob, dtype=dtype)


def _best_first(movie: np.ndarray, other: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The order (movie, similarity descending, other): one sort of a packed 64-bit key when
    the ids fit 16 bits (the Netflix Prize's 17,770 movies do), else a two-key lexsort.
    Similarities are positive, so their float32 bit patterns sort like the values."""
    inverted = np.uint64(0xFFFFFFFF) - value.astype(np.float32).view(np.uint32).astype(np.uint64)
    movie, other = movie.astype(np.uint64), other.astype(np.uint64)
    if len(movie) and max(int(movie.max()), int(other.max())) < 1 << 16:
        # Each (movie, other) occurs once, so the keys are distinct and the sort is exact.
        return np.argsort((movie << np.uint64(48)) | (inverted << np.uint64(16)) | other)
    return np.lexsort((other, (movie << np.uint64(32)) | inverted))


def _lists(movie: np.ndarray, other: np.ndarray, value: np.ndarray, keep: int | None):
    """Rows (movie_id, neighbours, similarities) of each movie's best ``keep``, best first
    (ties: lower id), as an Arrow batch of little-endian int32 / float32 bytes."""
    import pyarrow as pa

    order = _best_first(movie, other, value)
    movie, other, value = movie[order], other[order], value[order]
    ids, starts = np.unique(movie, return_index=True)
    stops = np.append(starts[1:], len(movie))
    if keep is not None:
        stops = np.minimum(stops, starts + keep)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids.astype(np.int32)),
         pa.array([_bytes(other[a:b], "<i4") for a, b in zip(starts, stops)], pa.binary()),
         pa.array([_bytes(value[a:b], "<f4") for a, b in zip(starts, stops)], pa.binary())],
        names=[MOVIE_ID, "neighbours", "similarities"])


def _unpack_lists(table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(movie, other, similarity) arrays from rows of :func:`_lists`."""
    movies = table.column(MOVIE_ID).to_numpy()
    others, lengths = partitions.binary_values(table.column("neighbours"), "<i4")
    values, _ = partitions.binary_values(table.column("similarities"), "<f4")
    if not len(movies):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.repeat(movies.astype(np.int64), lengths), others.astype(np.int64), values.copy()


LISTS_SCHEMA = f"{MOVIE_ID} int, neighbours binary, similarities binary"


def pack_blocks(sampled: DataFrame, blocks: int, pack_rows: int = PACK_ROWS) -> DataFrame:
    """Stage 1: (block, users, movies, residuals) rows of int32 / float32 bytes. Each task packs
    the rows of its own partition, about ``pack_rows`` at a time (whole Arrow batches), into
    one row per movie block: no shuffle of single ratings, as many tasks as partitions, and
    however big a partition is, a task holds about ``pack_rows`` ratings at once."""
    block_of = F.pmod(F.xxhash64(F.lit(11), F.col(MOVIE_ID)), F.lit(blocks)).cast("int")
    return partitions.pack(
        sampled.select(USER_ID, MOVIE_ID, "residual", block_of.alias("block")), "block",
        [(USER_ID, "users", "<i4"), (MOVIE_ID, "movies", "<i4"), ("residual", "residuals", "<f4")],
        pack_rows)


def pair_candidates(packed: DataFrame, blocks: int, shrink: float,
                    keep: int | None) -> DataFrame:
    """Stage 2: each block pair's packed ratings in one task -> per movie, its best ``keep``
    on that pair (``LISTS_SCHEMA`` rows)."""
    import pyarrow as pa

    partner = F.explode(F.sequence(F.lit(0), F.lit(blocks - 1)))
    low, high = F.least("block", "partner"), F.greatest("block", "partner")
    # Task number of the pair (low, high) in row-major order of the upper triangle.
    pair = (low * F.lit(blocks) - low * (low - F.lit(1)) / F.lit(2) + (high - low)).cast("long")
    copies = (packed.select("*", partner.alias("partner"))
              .select("users", "movies", "residuals", (F.col("block") == low).alias("first"),
                      (low == high).alias("same"), pair.alias("_pf_pair")))
    tasks = blocks * (blocks + 1) // 2
    routed = partitions.by_task(copies, F.col("_pf_pair"), tasks).drop("_pf_pair")
    shrink = float(shrink)

    def pair_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        user, lengths = partitions.binary_values(table.column("users"), "<i4")
        movie, _ = partitions.binary_values(table.column("movies"), "<i4")
        residual, _ = partitions.binary_values(table.column("residuals"), "<f4")
        first = np.repeat(table.column("first").to_numpy(zero_copy_only=False), lengths)
        same = bool(table.column("same")[0].as_py())
        del table
        movie, other, value = pair_statistics(user, movie, residual, first, same, shrink, keep)
        if len(movie):
            yield _lists(movie, other, value, keep)

    return routed.mapInArrow(pair_task, LISTS_SCHEMA)


def merge_candidates(candidates: DataFrame, tasks: int, keep: int | None,
                     merge_movies: int = MERGE_MOVIES) -> DataFrame:
    """Stage 3: every movie's candidates from its pairs -> its best ``keep``, one row; the
    movies hashed over ``tasks`` tasks, each task's taken ``merge_movies`` at a time."""
    import pyarrow as pa

    def merge(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = partitions.arrow_table(batches)
        if table is None:
            return
        # The rows (one per movie and pair) of ``merge_movies`` whole movies at a time, taken
        # from the table as they are needed: no sorted copy of the whole table.
        movies = table.column(MOVIE_ID).to_numpy()
        order = np.argsort(movies, kind="stable")
        in_order = movies[order]
        firsts = np.flatnonzero(np.diff(in_order, prepend=in_order[0] - 1))
        bounds = np.append(firsts[::max(1, merge_movies)], len(order))
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield _lists(*_unpack_lists(table.take(order[start:stop])), keep)

    by_movie = F.pmod(F.xxhash64(F.lit(13), F.col(MOVIE_ID)), F.lit(tasks))
    return partitions.by_task(candidates, by_movie, tasks).mapInArrow(merge, LISTS_SCHEMA)


def similarities(residuals: DataFrame, shrink: float, max_user_ratings: int | None,
                 keep: int | None, parallelism: int, rows: int | None = None,
                 rows_per_task: int = ROWS_PER_TASK,
                 merge_movies: int = MERGE_MOVIES) -> DataFrame:
    """One row per movie with a positive similarity to another: (movie_id, neighbours,
    similarities), its best ``keep`` other movie ids (int32 bytes) and similarities (float32
    bytes), best first. ``rows``: about how many rows the sample has, if the caller knows.

    Rows cross into Python once: each partition's sampled ratings are packed into a binary
    row per movie block (stage 1), the block pairs get copies of those (bytes, not rows:
    stage 2), and each movie's candidates from its pairs are merged (stage 3)."""
    sampled = sample_per_user(residuals.select(USER_ID, MOVIE_ID, "residual"),
                              max_user_ratings)
    if rows is None:
        rows = sampled.count()
    blocks = block_count(rows, parallelism, rows_per_task)
    packed = pack_blocks(sampled, blocks)
    # Merge tasks follow the cores, not the blocks: 3 blocks on 2 cores gave 3 merge tasks,
    # run in two uneven waves (measured at 10M); a cluster's cores outnumber its blocks.
    return merge_candidates(pair_candidates(packed, blocks, shrink, keep),
                            2 * max(1, parallelism), keep, merge_movies)


def collect_arrays(lists: DataFrame, movie_ids: np.ndarray,
                   keep: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The model's padded neighbour arrays from :func:`similarities` (collected to the driver:
    at most movies x keep entries, the model's own size)."""
    table = lists.toPandas()
    width = 0
    others = [_array(b, "<i4") for b in table["neighbours"]]
    values = [_array(b, "<f4") for b in table["similarities"]]
    if others:
        width = max(len(o) for o in others)
    if keep is not None:
        width = min(width, keep)
    neighbours = np.full((len(movie_ids), width), -1, dtype=np.int32)
    similarity = np.zeros((len(movie_ids), width), dtype=np.float32)
    rows = np.searchsorted(movie_ids, table[MOVIE_ID].to_numpy(np.int64))
    for row, movie, near, value in zip(rows, table[MOVIE_ID], others, values):
        if row >= len(movie_ids) or movie_ids[row] != movie:
            continue  # a movie the model does not know
        # Each row is already best first; neighbours the model does not know are dropped.
        pos = np.searchsorted(movie_ids, near)
        known = pos < len(movie_ids)
        known[known] &= movie_ids[pos[known]] == near[known]
        pos, value = pos[known][:width], value[known][:width]
        neighbours[row, :len(pos)] = pos
        similarity[row, :len(pos)] = value
    return neighbours, similarity
