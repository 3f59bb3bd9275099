"""Finding the ratings corpus files under a source path and telling their format.

The file names each format holds are declared in :mod:`prizeflow.formats`. Anything else
(READMEs, checksums, MovieLens' extra files) is ignored and named in a warning.

A file's identity in the lake is its **name**: its path under the source root with ``/``
separators (``combined_data_1.txt``, ``training_set/mv_0000001.txt``; a source that is one file
is known by its base name). So a corpus that is moved or copied to another folder is the same
corpus, and one spelling serves the manifest, the rows' ``source_file`` column and every filter.
Its **location** is where it is read from now: a Hadoop path as ``Path.toString`` spells it
(``file:/data/pf dir/u.data``, not URL-encoded). A local file also gets a **fingerprint**, the
SHA-256 of its bytes, so a file whose content changed is read again even when its size and
modification time were kept.

Two listers, one result (path, size, modification time per file):
- a folder on this machine's disk is walked here, before Spark starts (a symlink leading out of
  it is refused unless ``ingest.follow_external_links``, symlink loops are named and cut, an
  unreadable file fails now, naming it);
- any other source (``s3a://``, ``abfss://``, ``gs://``, ``hdfs://``, ``dbfs:/``: a URI; or any
  path over Spark Connect, where paths name the server's filesystems) is listed by Spark through the Hadoop filesystem that holds it: the ``binaryFile`` source with
  only its path, length and modification time selected, so no content is read. Hadoop hides
  names starting with ``_`` or ``.`` there; no corpus file is named so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prizeflow import formats
from prizeflow.secrets import redact_text

logger = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source cannot be ingested; the message says why."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # the location: a Hadoop path (file:/..., s3a://...), not URL-encoded
    table: str
    size: int
    modified: float
    name: str = ""  # the identity: path under the source root, '/'-separated
    fingerprint: str | None = None  # "sha256:<hex>" of a local file's bytes


@dataclass
class SourcePlan:
    format: str
    files: list[SourceFile]
    ignored: list[str] = field(default_factory=list)


def _walk(source: str, follow_external_links: bool = False) -> list[str]:
    """Every file under ``source``, following symlinks, each folder once: a symlink to a folder
    already listed (a loop, or a second way to the same files) is named in a warning and not
    followed. A symlink whose target lies outside ``source`` is a SourceError naming it, unless
    ``follow_external_links``: a link planted in a corpus (``combined_data_5.txt ->
    ~/.aws/credentials``) must not carry another file's lines into the lake."""
    if os.path.isfile(source):
        return [source]
    root = os.path.realpath(source)
    found = []
    visited = {root}

    def unreadable(error: OSError) -> None:
        # os.walk skips a folder it cannot list unless told: that would drop its files silently.
        raise SourceError(f"cannot read source folder {error.filename}: {error.strerror}")

    def check_inside(path: str) -> None:
        if follow_external_links or not os.path.islink(path):
            return
        target = os.path.realpath(path)
        if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
            raise SourceError(f"symlink {path} leads out of the source folder (to {target}): "
                              "refused; set ingest.follow_external_links to read it")

    for folder, dirs, names in os.walk(source, onerror=unreadable, followlinks=True):
        kept = []
        # Real folders before symlinks: a folder reached both ways is listed under its own path.
        names_first = sorted((d for d in dirs if not d.startswith(".")),
                             key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        for name in names_first:
            check_inside(os.path.join(folder, name))
            target = os.path.realpath(os.path.join(folder, name))
            if target in visited:
                logger.warning("not following %s: %s is already listed (a symlink loop or a "
                               "second path to it)", os.path.join(folder, name), target)
                continue
            visited.add(target)
            kept.append(name)
        dirs[:] = sorted(kept)
        files = [os.path.join(folder, n) for n in sorted(names) if not n.startswith(".")]
        for path in files:
            check_inside(path)
        found.extend(files)
    return found


def _uri(path: str) -> str:
    return "file:" + os.path.abspath(path)


_GLOB = re.compile(r"([\\{}\[\]*?])")


def spark_readable(location: str) -> str:
    """``location`` as a path Spark's readers take literally: they expand glob patterns, so a
    folder named ``a[1]`` or ``what?`` would match other files or none; a backslash escapes."""
    return _GLOB.sub(r"\\\1", location)


_SCHEME_AUTHORITY = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(//[^/]*)?")


def _path_part(location: str) -> str:
    """The path of a location without its scheme and authority (``s3a://b/x`` -> ``/x``)."""
    return posixpath.normpath(_SCHEME_AUTHORITY.sub("", location) or "/")


def file_name(location: str, source: str) -> str:
    """A file's identity: its path under ``source``, or its base name when ``source`` is the
    file itself."""
    path, root = _path_part(location), _path_part(source)
    if path == root:
        return posixpath.basename(path)
    if not path.startswith(root.rstrip("/") + "/"):
        raise SourceError(f"listed file {location} is not under the source {source}")
    return posixpath.relpath(path, root)


# Digests computed in this process, by the file's identity and every time stamp: a command lists
# its source up to three times (the check before Spark, the change check without Spark, the
# ingest), and any write to the file changes its ctime, so an entry never outlives its bytes.
_DIGESTS: dict[tuple, str] = {}


def fingerprint(path: str) -> str:
    """SHA-256 of a local file's bytes (about 1 GB/s a core: 2 s for the whole Prize corpus)."""
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            key = (path, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                   status.st_ctime_ns)
            if key not in _DIGESTS:
                _DIGESTS[key] = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
            return _DIGESTS[key]
    except OSError as exc:
        raise SourceError(f"cannot read source file {path}: {exc.strerror}") from None


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def listed_by_spark(source: str, connect: bool) -> bool:
    """True when Spark must list ``source``: a filesystem URI other than ``file:``, or any
    source over Spark Connect (paths name the server's filesystems, not this machine's)."""
    return connect or (bool(_SCHEME.match(source)) and not source.startswith("file:"))


def _local_files(source: str, follow_external_links: bool = False) -> list[tuple[str, int, float]]:
    if source.startswith("file:"):
        source = source[len("file:"):]
    if not os.path.exists(source):
        raise SourceError(f"source not found: {source}")
    files = []
    for path in _walk(source, follow_external_links):
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise SourceError(f"cannot read source file {path}: {exc.strerror}") from None
        files.append((_uri(path), stat.st_size, stat.st_mtime))
    return files


def _spark_files(spark, source: str) -> list[tuple[str, int, float]]:
    """Every file under ``source`` as the Hadoop filesystem behind it lists it."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        # Classic Spark resolves the path in load(), Spark Connect only when rows are asked for.
        rows = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                .load(spark_readable(source))
                .select("path", "length",
                        (F.unix_micros("modificationTime") / 1e6).alias("modified"))).collect()
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            raise SourceError(f"source not found: {redact_text(source)}") from None
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"cannot list source {redact_text(source)}: "
                          f"{redact_text(first_line)}") from None
    # binaryFile's path is Hadoop's Path.toString: the file's own name, no %-escapes.
    return sorted((row.path, int(row.length), float(row.modified)) for row in rows)


def discover(source: str, fmt: str = "auto", spark=None,
             follow_external_links: bool = False) -> SourcePlan:
    """List the corpus files under ``source``; ``fmt`` is ``auto``, ``netflix`` or ``movielens``
    (or one of the exact MovieLens variants). ``spark``: the session that lists a source this
    machine cannot (see :func:`listed_by_spark`); None lists the local disk, where symlinks out
    of ``source`` are refused unless ``follow_external_links``."""
    listed = (_local_files(source, follow_external_links) if spark is None
              else _spark_files(spark, source))
    stats = {path: (size, modified) for path, size, modified in listed}
    by_format: dict[str, list[tuple[str, str]]] = {}
    unmatched = []
    for path in stats:
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
    root = _uri(source.removeprefix("file:")) if spark is None else source
    files = [SourceFile(path, table, *stats[path], name=file_name(path, root))
             for path, table in by_format[chosen]]
    if spark is None:
        # Reading every byte also proves each file readable now, naming it if not.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            prints = list(pool.map(fingerprint, [f.path.removeprefix("file:") for f in files]))
        files = [SourceFile(f.path, f.table, f.size, f.modified, f.name, digest)
                 for f, digest in zip(files, prints)]
    movie_files = [f for f in files if f.table == "movies"]
    if len(movie_files) > 1:
        raise SourceError(f"several movie files under {source}: "
                          f"{', '.join(f.path for f in movie_files)}")
    return SourcePlan(chosen, files, sorted(ignored))
