"""Finding the ratings corpus files under a source path and telling their format.

The file names each format holds are declared in :mod:`prizeflow.formats`. Anything else
(READMEs, checksums, MovieLens' extra files) is ignored and named in a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from prizeflow import formats

logger = logging.getLogger(__name__)


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


def _walk(source: str) -> list[str]:
    """Every file under ``source``, following symlinks, each folder once: a symlink to a folder
    already listed (a loop, or a second way to the same files) is named in a warning and not
    followed."""
    if os.path.isfile(source):
        return [source]
    found = []
    visited = {os.path.realpath(source)}
    for folder, dirs, names in os.walk(source, followlinks=True):
        kept = []
        # Real folders before symlinks: a folder reached both ways is listed under its own path.
        names_first = sorted((d for d in dirs if not d.startswith(".")),
                             key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        for name in names_first:
            target = os.path.realpath(os.path.join(folder, name))
            if target in visited:
                logger.warning("not following %s: %s is already listed (a symlink loop or a "
                               "second path to it)", os.path.join(folder, name), target)
                continue
            visited.add(target)
            kept.append(name)
        dirs[:] = sorted(kept)
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
        kind = formats.classify(os.path.basename(path))
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
    elif fmt == formats.MOVIELENS:
        ml = [f for f in with_ratings if formats.FORMATS[f].family == formats.MOVIELENS]
        if len(ml) != 1:
            raise SourceError(f"expected exactly one MovieLens ratings format under {source}, found "
                              f"{ml or 'none'}")
        chosen = ml[0]
    elif fmt in formats.FORMATS:
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
        try:
            stat = os.stat(path)
            with open(path, "rb") as handle:
                handle.read(1)  # readable: Spark would fail deep in a job, naming nothing
        except OSError as exc:
            raise SourceError(f"cannot read source file {path}: {exc.strerror}") from None
        files.append(SourceFile(_uri(path), table, stat.st_size, stat.st_mtime))
    movie_files = [f for f in files if f.table == "movies"]
    if len(movie_files) > 1:
        raise SourceError(f"several movie files under {source}: "
                          f"{', '.join(f.path for f in movie_files)}")
    return SourcePlan(chosen, files, sorted(ignored))
