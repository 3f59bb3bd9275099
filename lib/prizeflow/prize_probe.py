"""Whether a test set is the Netflix Prize's probe set, judged by its content.

Cinematch's published RMSE (0.9474 on the probe, :data:`prizeflow.metrics.CINEMATCH_RMSE`) is a
measurement on one set of ratings. A lift over it means something only when the test set is
that very set: on generated or MovieLens data, or on part of the Prize's data, it compares
unlike things. ``train`` shows the Cinematch lift only when :func:`why_not_the_prize_probe`
finds nothing to object to, and otherwise says why it is left out.

The test set is recognised by its content, never by a file name:

- its size: the Prize's probe holds 1,408,395 ratings;
- the exact users of two of its movies (1 and 10), compared through a SHA-256 of their sorted
  ``movie:user`` pairs (the original ``probe.txt``'s sections for those movies, as in the shared
  Netflix sample). Only a test set of the probe's size is read for this.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from prizeflow.columns import MOVIE_ID, USER_ID

PROBE_RATINGS = 1_408_395
SAMPLE_MOVIES = (1, 10)
# sha256("\n".join(sorted(f"{movie}:{user}"))) over the probe's pairs of SAMPLE_MOVIES.
SAMPLE_PAIRS_SHA256 = "05c36806ee811f1e10b43f8d67a3443592f4fa5cb828a14bc19a0a76d153f880"


def sample_digest(pairs: DataFrame) -> str:
    """The SHA-256 of the sorted ``movie:user`` pairs of :data:`SAMPLE_MOVIES` in ``pairs``
    (computed in Spark: one string reaches the driver)."""
    pair = F.concat(F.col(MOVIE_ID).cast("string"), F.lit(":"), F.col(USER_ID).cast("string"))
    return (pairs.where(F.col(MOVIE_ID).isin(*SAMPLE_MOVIES))
            .agg(F.sha2(F.array_join(F.sort_array(F.collect_list(pair)), "\n"), 256))
            .first()[0])


def why_not_the_prize_probe(split_method: str, test: DataFrame, test_ratings: int) -> str | None:
    """None when ``test`` (``test_ratings`` rows with ``movie_id``, ``user_id``) is the Netflix
    Prize's probe set; otherwise why not, in one line."""
    if split_method != "probe":
        return f"the test set is a {split_method} split, not the Netflix Prize's probe set"
    if test_ratings != PROBE_RATINGS:
        return (f"the test set holds {test_ratings:,} ratings where the Netflix Prize's probe "
                f"set holds {PROBE_RATINGS:,}")
    if sample_digest(test) != SAMPLE_PAIRS_SHA256:
        return "the test set's users of movies 1 and 10 are not the Netflix Prize probe's"
    return None
