"""What knowing the pairs to predict gives the model: MovieLens 100K with each fold's test pairs
in a ``qualifying.txt``, against the same corpus without one.

    .venv/bin/python bench/bench_known_pairs.py [--folds 5]

In the Prize, which (user, movie) pairs were to be predicted was known: ``qualifying.txt`` lists
them with their dates, not their ratings, and the teams counted them in N(u), the movies a user
rated (Koren's SVD++). prizeflow does the same with a lake's ``qualifying`` table
(:func:`prizeflow.data.with_unrated`), but the only corpora here with one are generated, whose
qualifying users are drawn by popularity alone and so carry no signal. This bench measures it
on real ratings:

- ``../shared/data/ml-100k`` is written out in the Netflix Prize layout (``training_set/mv_*.txt``
  with the UTC date of each timestamp, ``movie_titles.txt``) and ingested into a lake;
- per hash fold (the quality protocol of ``bench_train.py quality``), the same files plus a
  ``qualifying.txt`` of that fold's test pairs (their dates only) are ingested into a lake of
  their own;
- ``prizeflow train`` with the default config and the fold's split runs on both lakes. The test
  ratings are in both lakes' ratings and the split holds them out of training in both; the
  second lake also knows that the pairs exist.

Prints per fold both test RMSEs and blend weights, their means, and the command; writes
bench/out/train-known-pairs.json. (Ranking quality is not compared: in the second
lake every relevant test movie is one the user is known to have rated, which top-N leaves out.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench_train import ML100K, OUT, _finish, _ingest, _session, _train


def write_corpus(out: Path, qualifying: dict[int, list[tuple[int, str]]] | None) -> None:
    """ML-100K in the Netflix Prize layout under ``out``; ``qualifying``: movie -> [(user,
    date)], written as ``qualifying.txt`` when given."""
    by_movie: dict[int, list[str]] = {}
    for line in (ML100K / "u.data").read_text().splitlines():
        user, movie, rating, stamp = line.split("\t")
        day = datetime.fromtimestamp(int(stamp), timezone.utc).strftime("%Y-%m-%d")
        by_movie.setdefault(int(movie), []).append(f"{user},{rating},{day}\n")
    (out / "training_set").mkdir(parents=True)
    for movie, rows in by_movie.items():
        (out / "training_set" / f"mv_{movie:07d}.txt").write_text(f"{movie}:\n" + "".join(rows))
    titles = []
    for line in (ML100K / "u.item").read_bytes().decode("iso-8859-1").splitlines():
        movie, title, released = line.split("|")[:3]
        year = released[-4:] if released else "NULL"
        titles.append(f"{movie},{year},{title}\n")
    (out / "movie_titles.txt").write_bytes("".join(titles).encode("iso-8859-1"))
    if qualifying is not None:
        (out / "qualifying.txt").write_text("".join(
            f"{movie}:\n" + "".join(f"{user},{day}\n" for user, day in pairs)
            for movie, pairs in sorted(qualifying.items())))


def fold_test_pairs(spark, config, folds: int, fold: int) -> dict[int, list[tuple[int, str]]]:
    """The fold's test pairs of the lake ``config`` names, by movie (20,000 rows: a bench may
    collect them)."""
    from prizeflow import data, splits

    settings = config.model_copy(update={"split": config.split.model_copy(
        update={"method": "hash", "folds": folds, "fold": fold})})
    source = data.load_training_data(spark, settings)
    split = data.split_ratings(source, settings, "hash")
    pairs: dict[int, list[tuple[int, str]]] = {}
    for row in splits.part(split, splits.TEST).select("movie_id", "user_id", "rated_on").collect():
        pairs.setdefault(row.movie_id, []).append((row.user_id, row.rated_on.isoformat()))
    return pairs


def _rounded(weights):
    return None if weights is None else [round(w, 3) for w in weights]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if not ML100K.is_dir():
        sys.exit(f"{ML100K} is not present")
    command = "python bench/bench_known_pairs.py " + " ".join(argv or sys.argv[1:])
    work = OUT / "known-pairs"
    shutil.rmtree(work, ignore_errors=True)
    write_corpus(work / "corpus", None)
    spark, plain = _session(work / "lake")
    _ingest(spark, plain, work / "corpus")
    rows = []
    for fold in range(args.folds):
        split = ["split.method=hash", f"split.folds={args.folds}", f"split.fold={fold}"]
        pairs = fold_test_pairs(spark, plain, args.folds, fold)
        corpus = work / f"corpus-{fold}"
        write_corpus(corpus, pairs)
        _, known = _session(work / f"lake-{fold}")
        ingest = _ingest(spark, known, corpus)
        without = _train(spark, plain, split)
        with_pairs = _train(spark, known, split)
        row = {"fold": fold, "qualifying_pairs": ingest["qualifying"],
               "split_counts": with_pairs["split_counts"],
               "without": without["test_rmse"], "with_known_pairs": with_pairs["test_rmse"],
               "blend_weights_without": without["blend_weights"],
               "blend_weights_with": with_pairs["blend_weights"]}
        if without["split_counts"] != with_pairs["split_counts"]:
            sys.exit(f"fold {fold}: the two lakes split differently: {without['split_counts']} "
                     f"against {with_pairs['split_counts']}")
        rows.append(row)
        print(f"fold {fold}: {row['qualifying_pairs']} known pairs; test RMSE "
              f"{row['without']:.4f} without, {row['with_known_pairs']:.4f} with them; blend "
              f"weights {_rounded(without['blend_weights'])} -> "
              f"{_rounded(with_pairs['blend_weights'])}", flush=True)
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("without", "with_known_pairs")}
    _finish("known-pairs", command, spark, {"folds": rows, "mean": mean})
    print(f"mean test RMSE: {mean['without']:.4f} without the pairs, "
          f"{mean['with_known_pairs']:.4f} with them")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
