"""Finding the ratings corpus files under a source path and telling their format.

Netflix Prize: ``training_set/mv_*.txt`` or ``combined_data_*.txt``, ``movie_titles.txt|csv``,
optional ``probe.txt`` and ``qualifying.txt``. MovieLens: 100K ``u.data`` + ``u.item``;
1M/10M ``ratings.dat`` + ``movies.dat``; 20M/25M/latest ``ratings.csv`` + ``movies.csv``.
Anything else (READMEs, checksums, MovieLens' extra files) is ignored and named in a warning.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

FORMATS = ("netflix", "ml-100k", "ml-dat", "ml-csv")

# (format, table, file-name pattern)
_PATTERNS = [
    ("netflix", "ratings", "mv_*.txt"),
    ("netflix", "ratings", "combined_data_*.txt"),
    ("netflix", "movies", "movie_titles.txt"),
    ("netflix", "movies", "movie_titles.csv"),
    ("netflix", "probe", "probe.txt"),
    ("netflix", "qualifying", "qualifying.txt"),
    ("ml-100k", "ratings", "u.data"),
    ("ml-100k", "movies", "u.item"),
    ("ml-dat", "ratings", "ratings.dat"),
    ("ml-dat", "movies", "movies.dat"),
    ("ml-csv", "ratings", "ratings.csv"),
    ("ml-csv", "movies", "movies.csv"),
]


class SourceError(ValueError):
    """The source cannot be ingested; the message says why."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # a Spark-readable URI (file:/...)
    table: str
    size: int
    modified: float


@dataclass
class SourcePlan:
    format: str
    files: list[SourceFile]
    ignored: list[str] = field(default_factory=list)

    def for_table(self, table: str) -> list[SourceFile]:
        return [f for f in self.files if f.table == table]


def _classify(name: str) -> tuple[str, str] | None:
    for fmt, table, pattern in _PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return fmt, table
    return None


def _walk(source: str) -> list[str]:
    if os.path.isfile(source):
        return [source]
    found = []
    for folder, dirs, names in os.walk(source, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(folder, n) for n in sorted(names) if not n.startswith("."))
    return found


def _uri(path: str) -> str:
    return "file:" + os.path.abspath(path)


def discover(source: str, fmt: str = "auto") -> SourcePlan:
    """List the corpus files under ``source``; ``fmt`` is ``auto``, ``netflix`` or ``movielens``
    (or one of the exact MovieLens variants)."""
    if source.startswith("file:"):
        source = source[len("file:"):]
    if not os.path.exists(source):
        raise SourceError(f"source not found: {source}")
    by_format: dict[str, list[tuple[str, str]]] = {}
    unmatched = []
    for path in _walk(source):
        kind = _classify(os.path.basename(path))
        if kind is None:
            unmatched.append(path)
        else:
            by_format.setdefault(kind[0], []).append((path, kind[1]))
    with_ratings = [f for f, entries in by_format.items() if any(t == "ratings" for _, t in entries)]
    if fmt == "auto":
        if not with_ratings:
            raise SourceError(f"no recognisable ratings files under {source} "
                              "(expected Netflix Prize or MovieLens files)")
        if len(with_ratings) > 1:
            raise SourceError(f"{source} holds ratings in several formats ({', '.join(sorted(with_ratings))}); "
                              "point --source at one corpus")
        chosen = with_ratings[0]
    elif fmt == "movielens":
        ml = [f for f in with_ratings if f.startswith("ml-")]
        if len(ml) != 1:
            raise SourceError(f"expected exactly one MovieLens ratings format under {source}, found "
                              f"{ml or 'none'}")
        chosen = ml[0]
    elif fmt in FORMATS:
        if fmt not in with_ratings:
            raise SourceError(f"no {fmt} ratings files under {source}")
        chosen = fmt
    else:
        raise SourceError(f"unknown --format {fmt!r}; use auto, netflix or movielens")
    ignored = unmatched + [p for f, entries in by_format.items() if f != chosen for p, _ in entries]
    if ignored:
        logger.warning("ignoring %d file(s) that are not %s ratings data: %s", len(ignored), chosen,
                       ", ".join(sorted(ignored)[:10]) + (" ..." if len(ignored) > 10 else ""))
    files = []
    for path, table in by_format[chosen]:
        stat = os.stat(path)
        files.append(SourceFile(_uri(path), table, stat.st_size, stat.st_mtime))
    movie_files = [f for f in files if f.table == "movies"]
    if len(movie_files) > 1:
        raise SourceError(f"several movie files under {source}: "
                          f"{', '.join(f.path for f in movie_files)}")
    return SourcePlan(chosen, files, sorted(ignored))
