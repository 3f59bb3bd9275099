"""Cinematch's lift is shown only over the Netflix Prize's own probe set, recognised by content."""

from __future__ import annotations

import pytest

from pyspark.sql import functions as F

from prizeflow import prize_probe

pytestmark = pytest.mark.spark


def _sample_pairs(shared_data) -> list[tuple[int, int]]:
    """The original probe.txt's sections for movies 1 and 10 (the shared Netflix sample)."""
    pairs, movie = [], None
    for line in (shared_data / "netflix-sample" / "probe.txt").read_text().splitlines():
        if line.endswith(":"):
            movie = int(line[:-1])
        elif line:
            pairs.append((movie, int(line)))
    return pairs


def _probe_like(spark, pairs: list[tuple[int, int]], total: int):
    """``pairs`` plus filler pairs of other movies (2..9), ``total`` rows in all."""
    filler = spark.range(total - len(pairs)).select(
        (F.col("id") % 8 + 2).cast("int").alias("movie_id"),
        (F.col("id") + 1).cast("int").alias("user_id"))
    return spark.createDataFrame(pairs, "movie_id int, user_id int").unionByName(filler)


def test_the_prizes_probe_is_recognised_by_its_content(spark, shared_data):
    pairs = _sample_pairs(shared_data)
    assert len(pairs) == 25 and {m for m, _ in pairs} == {1, 10}
    total = prize_probe.PROBE_RATINGS
    probe = _probe_like(spark, pairs, total)
    assert prize_probe.sample_digest(probe) == prize_probe.SAMPLE_PAIRS_SHA256
    assert prize_probe.why_not_the_prize_probe("probe", probe, total) is None

    # One user of movie 1 differs: the same size is not enough.
    changed = [(1, pairs[0][1] + 1)] + pairs[1:]
    why = prize_probe.why_not_the_prize_probe("probe", _probe_like(spark, changed, total), total)
    assert why == "the test set's users of movies 1 and 10 are not the Netflix Prize probe's"


def test_any_other_test_set_says_why_it_is_not_the_probe(spark):
    small = spark.createDataFrame([(1, 30878), (10, 7)], "movie_id int, user_id int")
    assert prize_probe.why_not_the_prize_probe("probe", small, 2) == (
        "the test set holds 2 ratings where the Netflix Prize's probe set holds 1,408,395")
    assert prize_probe.why_not_the_prize_probe("hash", small, 2) == (
        "the test set is a hash split, not the Netflix Prize's probe set")
