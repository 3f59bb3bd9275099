"""Every source format prizeflow reads, declared once: its files, parsers, header rule and scale.

Netflix Prize: ``training_set/mv_*.txt`` or ``combined_data_*.txt``, ``movie_titles.txt|csv``,
optional ``probe.txt`` and ``qualifying.txt``. MovieLens: 100K ``u.data`` + ``u.item``;
1M/10M ``ratings.dat`` + ``movies.dat``; 20M/25M/latest ``ratings.csv`` + ``movies.csv``.
:mod:`prizeflow.sources` finds the files by these patterns and :mod:`prizeflow.ingestion`
parses them with these parsers; ``--format`` takes a name here, a family, or ``auto``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import DataFrame

from prizeflow import parse
from prizeflow.parse import RatingScale

Parser = Callable[[DataFrame], DataFrame]


@dataclass(frozen=True)
class FileKind:
    """One kind of file of a format: the table its lines go to."""
    table: str
    patterns: tuple[str, ...]
    parser: Parser
    # Netflix files name their movie on a `MovieID:` line above its ratings, so a line's
    # meaning depends on the header before it (prizeflow.lines.locate_lines finds it).
    with_headers: bool = False


@dataclass(frozen=True)
class Format:
    name: str
    family: str  # what `--format netflix|movielens` selects
    scale: RatingScale
    files: tuple[FileKind, ...]

    def kind(self, table: str) -> FileKind:
        for kind in self.files:
            if kind.table == table:
                return kind
        raise KeyError(f"format {self.name} has no {table} files")


NETFLIX, MOVIELENS = "netflix", "movielens"

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("netflix", NETFLIX, parse.NETFLIX_SCALE, (
        FileKind("ratings", ("mv_*.txt", "combined_data_*.txt"), parse.parse_netflix_ratings, True),
        FileKind("movies", ("movie_titles.txt", "movie_titles.csv"), parse.parse_netflix_titles),
        FileKind("probe", ("probe.txt",), parse.parse_netflix_probe, True),
        FileKind("qualifying", ("qualifying.txt",), parse.parse_netflix_qualifying, True),
    )),
    Format("ml-100k", MOVIELENS, parse.ML_INTEGER_SCALE, (
        FileKind("ratings", ("u.data",), parse.parse_ml100k_ratings),
        FileKind("movies", ("u.item",), parse.parse_ml100k_items),
    )),
    Format("ml-dat", MOVIELENS, parse.ML_HALF_STAR_SCALE, (
        FileKind("ratings", ("ratings.dat",), parse.parse_mldat_ratings),
        FileKind("movies", ("movies.dat",), parse.parse_mldat_movies),
    )),
    Format("ml-csv", MOVIELENS, parse.ML_HALF_STAR_SCALE, (
        FileKind("ratings", ("ratings.csv",), parse.parse_mlcsv_ratings),
        FileKind("movies", ("movies.csv",), parse.parse_mlcsv_movies),
    )),
)}

# `--format` values: auto-detection, a family, or one exact layout.
CHOICES = ("auto", NETFLIX, MOVIELENS, *(name for name in FORMATS if name != NETFLIX))


def classify(file_name: str) -> tuple[str, str] | None:
    """(format, table) of a file by its name, or None for a file no format reads."""
    for fmt in FORMATS.values():
        for kind in fmt.files:
            if any(fnmatch.fnmatchcase(file_name, p) for p in kind.patterns):
                return fmt.name, kind.table
    return None
