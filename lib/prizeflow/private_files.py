"""Files prizeflow writes for its own use (the driver JVM's log4j config, the FAIR pool file):
where they live, so that no other local user can plant or change one.

On a shared machine (an Airflow worker, an edge node) the system temp folder is writable by
everyone, and a file there with a predictable name could be created by anyone first: whoever
writes the JVM's log4j config decides where its logs go. So these files live in
``<temp>/prizeflow-<uid>``, a folder created ``0700`` for this user, used only when it is a real
folder (not a symlink), owned by this user and closed to everyone else. When it is not (someone
else made it first, or opened it up), the run uses a fresh folder of its own (``mkdtemp``, also
``0700``), removed when the process exits, and says so in a warning.

A file in that folder is used only when its bytes are exactly the expected content; anything
else is replaced, through a private temporary name and an atomic rename, so a concurrent start
never reads half a file.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_RUN_FOLDER: Path | None = None


def is_private_folder(path: Path, closed: int = 0o077) -> bool:
    """True when ``path`` is a folder (not a symlink) owned by this user whose ``closed``
    permission bits are all off: by default no one else can write, read or enter it;
    ``0o022``: no one else can write it."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and info.st_mode & closed == 0)


def private_folder() -> Path:
    """This user's private folder for prizeflow's own files (see the module docstring)."""
    shared = Path(tempfile.gettempdir()) / f"prizeflow-{os.geteuid()}"
    try:
        shared.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        logger.warning("cannot create %s (%s): this run keeps its own files in a temporary "
                       "folder", shared, exc.strerror)
        return _run_folder()
    if is_private_folder(shared):
        return shared
    logger.warning("%s is not a private folder of this user (another owner, a symlink or open "
                   "to others): not used; this run keeps its own files in a temporary folder",
                   shared)
    return _run_folder()


def _run_folder() -> Path:
    global _RUN_FOLDER
    if _RUN_FOLDER is None or not is_private_folder(_RUN_FOLDER):
        _RUN_FOLDER = Path(tempfile.mkdtemp(prefix="prizeflow-run-"))
        atexit.register(shutil.rmtree, _RUN_FOLDER, ignore_errors=True)
    return _RUN_FOLDER


def content_file(prefix: str, suffix: str, text: str) -> Path:
    """A file holding exactly ``text`` in :func:`private_folder`, named by its content's hash:
    kept when it already holds ``text`` byte for byte, written (again) otherwise."""
    data = text.encode("utf-8")
    folder = private_folder()
    path = folder / f"{prefix}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    if _holds(path, data):
        return path
    write_whole(path, data)
    return path


def _holds(path: Path, data: bytes) -> bool:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a new private file in the same folder and an atomic
    rename (a symlink or a file already at ``path`` is replaced, never written through)."""
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
