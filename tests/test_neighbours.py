"""The Spark side of the model on small frames: movie similarities from block products against a
hand computation, the per-user sample, scoring in user buckets against the numpy rule, and the
blend's least squares."""

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from prizeflow import blend, neighbours, partitions, scoring
from prizeflow.factors import FactorModel, Neighbourhood, Requests
from prizeflow.rule import Rule

pytestmark = pytest.mark.spark

SHRINK = 2.0


def _residual_rows():
    """9 users x 8 movies with holes; residuals from a fixed pseudo-random rule."""
    rows = []
    for user in range(1, 10):
        for movie in range(1, 9):
            if (user * 3 + movie) % 5 == 0:
                continue  # not rated
            rows.append((user, movie * 10, ((user * 7 + movie * 11) % 9 - 4) / 2.0))
    return rows


@pytest.fixture(scope="module")
def residuals(spark):
    return spark.createDataFrame(_residual_rows(), "user_id int, movie_id int, residual double")


def _hand_similarities(rows, shrink):
    by_user = {}
    for user, movie, value in rows:
        by_user.setdefault(user, {})[movie] = value
    movies = sorted({m for _, m, _ in rows})
    norm = {m: sum(r[m] ** 2 for r in by_user.values() if m in r) for m in movies}
    out = {}
    for a in movies:
        for b in movies:
            common = [r for r in by_user.values() if a in r and b in r]
            if a == b or not common:
                continue
            dot = sum(r[a] * r[b] for r in common)
            similarity = (dot / (math.sqrt(norm[a] * norm[b]) + 1e-9)
                          * len(common) / (len(common) + shrink))
            if similarity > 0:
                out[(a, b)] = similarity
    return out


def _pairs(lists):
    """{(movie, other): similarity} of :func:`neighbours.similarities`' rows (a small frame)."""
    movie, other, value = neighbours._unpack_lists(lists.toArrow())
    return {(int(m), int(o)): float(v) for m, o, v in zip(movie, other, value)}


# 2 blocks (2 cores), 5, 16; merge tasks take every movie at once, 2 or 1 at a time
@pytest.mark.parametrize("rows_per_task, merge_movies", [(10**9, 500), (30, 2), (7, 1)])
def test_similarities_equal_a_hand_computation_however_the_blocks_fall(residuals, rows_per_task,
                                                                        merge_movies):
    expected = _hand_similarities(_residual_rows(), SHRINK)
    lists = neighbours.similarities(residuals, SHRINK, None, None, parallelism=2,
                                    rows_per_task=rows_per_task, merge_movies=merge_movies)
    got = _pairs(lists)
    assert len(expected) > 10  # the fixture has positive and non-positive pairs
    assert got == pytest.approx(expected, rel=1e-5)
    movie, other, _ = neighbours._unpack_lists(lists.toArrow())
    assert len(movie) == len(got)  # each pair once however many blocks
    assert lists.count() == len({m for m, _ in expected})  # one row per movie


def test_keep_stores_each_movies_best_neighbours_ties_by_lower_id(residuals):
    expected = _hand_similarities(_residual_rows(), SHRINK)
    lists = neighbours.similarities(residuals, SHRINK, None, 2, parallelism=2, rows_per_task=20,
                                    merge_movies=3)
    movie_ids = np.array(sorted({m for _, m, _ in _residual_rows()}), dtype=np.int64)
    near, values = neighbours.collect_arrays(lists, movie_ids, 2)
    for index, movie in enumerate(movie_ids):
        ranked = sorted((-np.float32(s), o) for (m, o), s in expected.items() if m == movie)
        best = [o for _, o in ranked[:2]]
        assert [movie_ids[j] for j in near[index] if j >= 0] == best
        assert list(values[index][near[index] >= 0]) == pytest.approx([-s for s, _ in ranked[:2]],
                                                                      rel=1e-5)


def _packed(packed):
    """(sorted (user, movie, residual, block) of every packed rating, ratings per packed row)."""
    rows = packed.toArrow()
    users, lengths = partitions.binary_values(rows.column("users"), "<i4")
    movies, _ = partitions.binary_values(rows.column("movies"), "<i4")
    values, _ = partitions.binary_values(rows.column("residuals"), "<f4")
    blocks = np.repeat(rows.column("block").to_numpy(), lengths)
    return sorted(zip(users.tolist(), movies.tolist(), values.tolist(), blocks.tolist())), lengths


def _block_of(blocks):
    """A rating's movie block, computed by Spark independently of the packing code."""
    return F.pmod(F.xxhash64(F.lit(11), "movie_id"), F.lit(blocks)).alias("block")


def _with_blocks(frame, blocks):
    """Every rating of ``frame`` with its movie block as Spark computes it."""
    return sorted((r.user_id, r.movie_id, float(np.float32(r.residual)), r.block)
                  for r in frame.select("*", _block_of(blocks)).collect())


def test_each_partition_packs_its_own_ratings_without_a_shuffle(residuals):
    frame = residuals.repartition(3).localCheckpoint()
    packed = neighbours.pack_blocks(frame, 4)
    assert "Exchange" not in packed._jdf.queryExecution().executedPlan().toString()
    got, _ = _packed(packed)
    assert got == _with_blocks(frame, 4)  # every rating once, in its movie's block
    assert len({block for *_, block in got}) > 1
    per_partition = frame.select(F.spark_partition_id(), _block_of(4)).distinct().count()
    assert packed.count() == per_partition  # one packed row per (partition, block) it holds


def test_a_packing_task_holds_a_few_batches_at_a_time(spark, residuals):
    frame = residuals.coalesce(1)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4")
    try:
        got, lengths = _packed(neighbours.pack_blocks(frame, 2, pack_rows=5))
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert got == _with_blocks(frame, 2)
    assert len(lengths) > 10 and max(lengths) <= 8  # two batches of 4, then packed


def test_similarities_do_not_depend_on_the_input_partitions(spark):
    # Residuals that are not multiples of a power of two, so float32 sums in another order
    # would differ in their last bits.
    rows = [(u, m, r * 1.37 + 0.011) for u, m, r in _residual_rows()]
    frame = spark.createDataFrame(rows, "user_id int, movie_id int, residual double")
    one = neighbours.similarities(frame.coalesce(1), SHRINK, 20, None, parallelism=2)
    five = neighbours.similarities(frame.repartition(5), SHRINK, 20, None, parallelism=2)
    first, again = (sorted(lists.collect()) for lists in (one, five))
    assert len(first) > 5 and first == again  # the very same bytes


def test_sample_per_user_is_fixed_and_spares_light_raters(spark):
    rows = [(u, m, 0.5) for u in range(1, 41) for m in range(1, (60 if u <= 20 else 4) + 1)]
    frame = spark.createDataFrame(rows, "user_id int, movie_id int, residual double")
    first = {(r.user_id, r.movie_id) for r in neighbours.sample_per_user(frame, 10).collect()}
    again = {(r.user_id, r.movie_id) for r in
             neighbours.sample_per_user(frame.repartition(3), 10).collect()}
    assert first == again and first <= {(u, m) for u, m, _ in rows}
    per_user = {u: sum(1 for uu, _ in first if uu == u) for u in range(1, 41)}
    assert all(per_user[u] == 4 for u in range(21, 41))  # under the cap: every rating
    heavy = [per_user[u] for u in range(1, 21)]
    assert 150 < sum(heavy) < 250 and max(heavy) < 30  # about 10 each of 60
    assert neighbours.sample_per_user(frame, None) is frame


def _model(rng, users, movies, rank=2, keep=3):
    near = np.full((len(movies), keep), -1, dtype=np.int32)
    sims = np.zeros((len(movies), keep), dtype=np.float32)
    for m in range(len(movies)):
        others = rng.choice([o for o in range(len(movies)) if o != m], keep, replace=False)
        values = np.sort(rng.random(keep).astype(np.float32))[::-1]
        near[m], sims[m] = others, values
    return FactorModel(
        "residual", 3.5, 1.0, 5.0, users, rng.normal(0, 0.3, len(users)),
        rng.normal(0, 0.3, (len(users), rank)).astype(np.float32), np.arange(len(users)) % 5 != 0,
        movies, rng.normal(0, 0.3, len(movies)),
        rng.normal(0, 0.3, (len(movies), rank)).astype(np.float32), np.ones(len(movies), bool),
        Neighbourhood(2, 1.5, np.array([0.1, 0.9, 1.2, 2.0]), np.array([0.0, 1.0, 1.0]),
                      near, sims))


def test_spark_scoring_in_buckets_equals_the_numpy_rule(spark):
    rng = np.random.default_rng(3)
    users, movies = np.arange(1, 31, dtype=np.int64), np.arange(10, 22, dtype=np.int64)
    model = _model(rng, users, movies)
    history = [(int(u), int(m), float(rng.integers(1, 6))) for u in users
               for m in rng.choice(movies, 4, replace=False)]
    wanted = [(int(u), int(m), 3.0, 1) for u in np.append(users, [999]) for m in movies[:5]]
    wanted += [(1, 9999, 4.0, 2)]  # an unknown movie
    frames = (spark.createDataFrame(wanted, "user_id int, movie_id int, rating double, tag int"),
              spark.createDataFrame(history, "user_id int, movie_id int, rating double"))
    parts = scoring.score(model, scoring.user_frame(spark, model), *frames, buckets=3).collect()
    assert len(parts) == len(wanted)
    got = {(r.user_id, r.movie_id): r for r in parts}
    ask_users = np.array([w[0] for w in wanted])
    ask_movies = np.array([w[1] for w in wanted])
    expected = model.parts(Requests.by_user(ask_users, ask_movies,
                                            tuple(np.array(c) for c in zip(*history))))
    for name in ("baseline", "factor_term", "neighbour_term"):
        values = np.array([getattr(got[(u, m)], name) for u, m in zip(ask_users, ask_movies)])
        assert np.array_equal(values, expected[name]), name
    assert np.count_nonzero(expected["neighbour_term"]) > 20
    assert got[(999, 10)].factor_term == 0.0 and got[(1, 9999)].neighbour_term == 0.0


def test_spark_top_n_equals_the_numpy_ranking(spark):
    rng = np.random.default_rng(4)
    users, movies = np.arange(1, 26, dtype=np.int64), np.arange(10, 70, dtype=np.int64)
    model = _model(rng, users, movies, keep=5)
    history = [(int(u), int(m), float(rng.integers(1, 6))) for u in users
               for m in rng.choice(movies, int(rng.integers(0, 20)), replace=False)]
    frame = spark.createDataFrame(history, "user_id int, movie_id int, rating double")
    rows = scoring.top_n(model, scoring.user_frame(spark, model), frame, 4, buckets=4).collect()
    h_users, h_movies, h_ratings = (np.array(c) for c in zip(*history))
    owner, ranks, best, scores = model.top_n(users, np.searchsorted(users, h_users), h_movies,
                                             h_ratings, 4)
    assert sorted((r.user_id, r.rank, r.movie_id) for r in rows) == sorted(
        zip(users[owner].tolist(), ranks.tolist(), best.tolist()))
    for user in users:
        rated = set(h_movies[h_users == user].tolist())
        assert not rated & {r.movie_id for r in rows if r.user_id == user}


def test_history_reaches_its_users_bucket_packed_and_whole(spark):
    # The history is packed where it lies, so the shuffle moves a few rows of bytes per input
    # partition and bucket, not one row per rating; every rating arrives once, in its user's
    # bucket, beside that user's row to score.
    rng = np.random.default_rng(6)
    history = [(int(u), int(m), float(rng.integers(1, 6)))
               for u in range(1, 41) for m in rng.choice(np.arange(10, 60), 6, replace=False)]
    frame = spark.createDataFrame(history, "user_id int, movie_id int, rating double"
                                  ).repartition(3)
    wanted = spark.createDataFrame([(u, 0, None, 1, 0.0, None) for u in range(1, 41)],
                                   "user_id int, movie_id int, rating float, tag int, "
                                   "b_user double, factors binary")
    routed = scoring._bucketed(wanted, frame, 4, timed=False).select(
        F.spark_partition_id().alias("part"), "*").toArrow()
    packed = routed.filter(routed.column(scoring.PACKED[0]).is_valid())
    assert 0 < packed.num_rows <= 3 * 4
    users, lengths = partitions.binary_values(packed.column(scoring.PACKED[0]), "<i4")
    movies, _ = partitions.binary_values(packed.column(scoring.PACKED[1]), "<i4")
    ratings, _ = partitions.binary_values(packed.column(scoring.PACKED[2]), "<f4")
    assert sorted(zip(users.tolist(), movies.tolist(), ratings.tolist())) == sorted(history)
    asked = routed.filter(routed.column(scoring.PACKED[0]).is_null())
    part_of_user = dict(zip(asked.column("user_id").to_pylist(), asked.column("part").to_pylist()))
    assert sorted(part_of_user) == list(range(1, 41))
    packed_part = np.repeat(packed.column("part").to_numpy(), lengths)
    assert all(part_of_user[u] == p for u, p in zip(users.tolist(), packed_part.tolist()))
    assert len(set(part_of_user.values())) > 1


def test_blend_weights_recover_a_linear_rule_and_nest(spark):
    rng = np.random.default_rng(3)
    # Correlated parts, as the model's are: a subset's weights are not the full fit's, cut short.
    features = rng.normal(size=(500, 3)) @ np.array([[1, 0.5, 0.3], [0, 1, 0.6], [0, 0, 1]])
    rating = 0.5 + features @ np.array([0.9, 1.1, 2.0]) + rng.normal(0, 0.2, 500)
    # The columns in another order than blend.features: the weights follow the names.
    frame = spark.createDataFrame(
        [(float(r),) + tuple(map(float, row[::-1])) for row, r in zip(features, rating)],
        "rating double, neighbour_term double, factor_term double, baseline double")
    nested = blend.fit_nested_weights(frame, blend.features(with_implicit=False))
    assert len(nested) == 4 and [len(w) for w in nested] == [1, 2, 3, 4]
    assert nested[3] == pytest.approx([0.5, 0.9, 1.1, 2.0], abs=0.05)  # the generating rule
    # Each leading subset's weights are its own least-squares solution, computed here in numpy
    # from the rows Spark holds (the ridge, 1e-6 x rows, moves them by about 1e-6).
    rows = frame.toPandas()
    for n, weights in enumerate(nested):
        design = np.column_stack([np.ones(len(rows))]
                                 + [rows[name] for name in blend.features(False)[:n]])
        expected = np.linalg.lstsq(design, rows["rating"], rcond=None)[0]
        assert weights == pytest.approx(expected, abs=1e-4), n
    clipped = frame.select(Rule.linear(nested[3], 1.0, 5.0).column().alias("p")).agg(
        F.min("p"), F.max("p")).first()
    assert clipped[0] >= 1.0 and clipped[1] <= 5.0
    with pytest.raises(ValueError, match="empty"):
        blend.fit_nested_weights(frame.where(F.lit(False)), blend.features(False))
