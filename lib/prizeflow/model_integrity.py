"""A registered model is checked before any of its code runs.

Loading an MLflow pyfunc imports the code stored with it (``served_model.py`` and the package
under ``code/``) and reads its arrays: whoever can write the artifact store could otherwise run
code as the pipeline. So:

- ``train`` logs the model, reads it back from the artifact store and records the digest of
  every file in it as the run's param ``model_digest`` (params are immutable);
- ``register`` downloads the run's model, refuses it when it no longer has that digest, and
  records the digest in the new version's tag ``prizeflow.model_digest``;
- every load (``recommend``, ``register``'s re-score of the champion, :func:`verified_copy` for
  serving) downloads the version's files into a private folder, computes their digest, refuses
  a version whose files differ from its tag (or that has no tag) in one line naming the version,
  and only then imports the model, from that checked copy.

The digest: SHA-256 over each file's path under the model folder, its size and the SHA-256 of
its bytes, in path order (``sha256:<hex>``): the code, the arrays (``factors.npz``), ``MLmodel``
and the requirements. A symlink in the folder is refused.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from prizeflow.errors import JobError, one_line
from prizeflow.private_files import private_folder
from prizeflow.secrets import redact_text

logger = logging.getLogger(__name__)

DIGEST_PARAM = "model_digest"
DIGEST_TAG = "prizeflow.model_digest"


class ModelIntegrityError(JobError):
    """A model's files are not the ones recorded when it was logged or registered."""


def folder_digest(folder: str | Path) -> str:
    """``sha256:<hex>`` of every file under ``folder``: its relative path, size and bytes."""
    root = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    for path in files:
        name = path.relative_to(root).as_posix().encode("utf-8")
        if path.is_symlink():
            raise ModelIntegrityError(f"model file {name.decode()} is a symlink: refused")
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"sha256:{digest.hexdigest()}"


def download(model_uri: str, into: str | Path) -> Path:
    """The files of ``model_uri`` (``runs:/``, ``models:/``, a path) copied into ``into``."""
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into)))


def digest_of(model_uri: str) -> str:
    """The digest of the model at ``model_uri`` as the artifact store holds it now."""
    with tempfile.TemporaryDirectory(prefix="prizeflow-digest-") as folder:
        return folder_digest(download(model_uri, folder))


def check(expected: str | None, actual: str, what: str,
          unrecorded: str = "register its train run again with this prizeflow") -> None:
    """Refuse ``what`` unless its files have the ``expected`` digest; ``unrecorded`` says what
    to do when none was recorded."""
    if not expected:
        raise ModelIntegrityError(f"{what} has no recorded digest: refused; {unrecorded}")
    if actual != expected:
        raise ModelIntegrityError(f"{what} does not match its recorded digest ({expected[:19]}... "
                                  f"recorded, {actual[:19]}... now): its files were changed "
                                  "after it was logged; refused")


def verified_copy(name: str, version, into: str | Path) -> Path:
    """The files of registered ``version`` (an MLflow ModelVersion of ``name``) copied into
    ``into`` and checked against its digest tag; the folder to load from."""
    what = f"model version {version.version} of {name!r}"
    # From the version's source (the logged model): a download through models:/<name>/<n>
    # adds a registered_model_meta file of MLflow's own to the copy.
    local = download(version.source, into)
    check((version.tags or {}).get(DIGEST_TAG), folder_digest(local), what)
    return local


def load_verified(name: str, version):
    """The pyfunc of registered ``version``, imported only after its files were verified, from
    a copy in this user's private folder. The copy stays until the process exits: MLflow put
    its code folder on ``sys.path``, and a removed folder there could be re-created by anyone."""
    import atexit
    import shutil

    import mlflow.pyfunc

    folder = tempfile.mkdtemp(prefix="model-", dir=private_folder())
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    local = verified_copy(name, version, folder)
    logger.info("model version %s of %r verified (%s...)", version.version, name,
                version.tags.get(DIGEST_TAG, "")[:19])
    return mlflow.pyfunc.load_model(str(local))


def main(argv: list[str] | None = None) -> int:
    """``python -m prizeflow.model_integrity NAME@ALIAS|NAME/VERSION DIR``: copy the registered
    version into DIR, verified, and print DIR's model folder (what ``make serve`` serves), or
    exit 1 with one line naming the version."""
    import argparse
    import sys

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    parser = argparse.ArgumentParser(prog="python -m prizeflow.model_integrity")
    parser.add_argument("model", help="NAME@ALIAS or NAME/VERSION of a registered model")
    parser.add_argument("into", help="an empty folder to copy the verified model into")
    args = parser.parse_args(argv)
    client = MlflowClient()
    try:
        if "@" in args.model:
            name, alias = args.model.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = args.model.rsplit("/", 1)
            version = client.get_model_version(name, number)
        print(verified_copy(name, version, args.into))
    except (ModelIntegrityError, MlflowException, ValueError) as exc:
        print(redact_text(f"prizeflow: error: {one_line(exc)}"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
