"""precision@k, recall@k and NDCG@k against hand computations, and the popularity baseline."""

from __future__ import annotations

import math

import pytest

from prizeflow import ranking

pytestmark = pytest.mark.spark


def test_figures_are_the_hand_computed_means(spark):
    # User 1: relevant {10, 20, 30}; list 10, 40, 30 (hits at ranks 1 and 3).
    # User 2: relevant {50}; list 60, 70, 80 (no hit). User 3: relevant {90}; no list at all.
    top = spark.createDataFrame([(1, 1, 10), (1, 2, 40), (1, 3, 30), (2, 1, 60), (2, 2, 70),
                                 (2, 3, 80)], "user_id int, rank int, movie_id int")
    relevant = spark.createDataFrame([(1, 10), (1, 20), (1, 30), (2, 50), (3, 90), (4, 99)],
                                     "user_id int, movie_id int")
    users = spark.createDataFrame([(1,), (2,), (3,)], "user_id int")  # user 4 not sampled

    figures = ranking.quality(top, relevant, users, k=3)

    dcg_1 = 1 / math.log2(2) + 1 / math.log2(4)
    ideal_1 = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert figures["users"] == 3
    assert figures["precision_at_3"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert figures["recall_at_3"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert figures["ndcg_at_3"] == pytest.approx((dcg_1 / ideal_1 + 0 + 0) / 3)


def test_popularity_lists_skip_what_each_user_rated(spark):
    # Movie popularity: 1 (4 ratings) > 2 (3) > 3 (2) > 4 (1).
    history = spark.createDataFrame(
        [(u, 1) for u in (1, 2, 3, 4)] + [(u, 2) for u in (1, 5, 6)] + [(5, 3), (6, 3), (6, 4)],
        "user_id int, movie_id int")
    users = spark.createDataFrame([(1,), (6,), (7,)], "user_id int")

    lists = ranking.popularity_top(history, users, k=2)

    got = sorted(tuple(r) for r in lists.collect())
    assert got == [(1, 1, 3), (1, 2, 4),   # rated 1 and 2
                   (6, 1, 1),              # rated 2, 3 and 4: one movie left
                   (7, 1, 1), (7, 2, 2)]   # rated nothing


def test_the_sample_is_fixed_by_the_seed(spark):
    relevant = spark.range(1, 201).selectExpr("cast(id as int) as user_id", "7 as movie_id")
    first = [r.user_id for r in ranking.sample_users(relevant, 20, seed=5).collect()]
    again = [r.user_id for r in ranking.sample_users(relevant, 20, seed=5).collect()]
    other = [r.user_id for r in ranking.sample_users(relevant, 20, seed=6).collect()]
    assert first == again and len(set(first)) == 20 and set(first) != set(other)
