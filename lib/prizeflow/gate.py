"""What the registry gate compares: the record a train run leaves, fixed once it is written.

A train run logs, as MLflow params (which MLflow refuses to change once logged, unlike metrics
and tags, whose latest value anyone can overwrite):

- ``gate.split``: a SHA-256 of the exact identity of its test set and of what it was scored with
  (the ratings, probe and qualifying tables' Delta ids, exact paths and versions, the split
  method and settings: the qualifying pairs are in every user's history), so two lakes that differ
  only in a masked part of their URI are never taken for one, and no secret is stored;
- ``gate.lake``: a SHA-256 of the exact lake root, and ``gate.lake_root``, the same root with
  credentials masked (the root ``register`` re-scores a champion on, when nothing was masked);
- ``gate.ratings_table``: the Delta table id of ``ratings`` (a lake re-created at the same path
  is another lake);
- ``gate.test_rmse``: the exact test RMSE, logged as the run's last act.

:func:`record_of` reads them back; a run without them was not made by a ``train`` that records
them, and is not registered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from prizeflow.secrets import MASK, redact_text

PREFIX = "gate."


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DataIdentity:
    """Where a run's test set came from, exactly."""
    lake_root: str  # absolute, unredacted: never logged as it is
    ratings_table: str  # Delta table id
    ratings_path: str
    ratings_version: int
    probe_table: str | None
    probe_path: str | None
    probe_version: int | None
    # The qualifying pairs every scoring history holds (prizeflow.data.with_unrated), if any.
    qualifying_table: str | None = None
    qualifying_path: str | None = None
    qualifying_version: int | None = None

    def split_signature(self, method: str, split_settings: dict[str, Any]) -> str:
        parts = [f"ratings={self.ratings_table}@{self.ratings_path}@{self.ratings_version}",
                 f"method={method}"]
        if method == "probe":
            parts.append(f"probe={self.probe_table}@{self.probe_path}@{self.probe_version}")
        if self.qualifying_table is not None:
            parts.append(f"qualifying={self.qualifying_table}@{self.qualifying_path}"
                         f"@{self.qualifying_version}")
        parts += [f"{k}={split_settings[k]}" for k in sorted(split_settings)]
        return digest(";".join(parts))

    def params(self, method: str, split_settings: dict[str, Any]) -> dict[str, str]:
        return {f"{PREFIX}split": self.split_signature(method, split_settings),
                f"{PREFIX}lake": digest(self.lake_root),
                f"{PREFIX}lake_root": redact_text(self.lake_root),
                f"{PREFIX}ratings_table": self.ratings_table}


def test_rmse_param(rmse: float) -> dict[str, str]:
    # repr round-trips a float exactly.
    return {f"{PREFIX}test_rmse": repr(float(rmse))}


@dataclass(frozen=True)
class Record:
    split: str
    lake: str
    lake_root: str  # credentials masked
    ratings_table: str
    test_rmse: float

    @property
    def lake_root_is_exact(self) -> bool:
        """True when masking changed nothing: the logged root is the one trained on."""
        return MASK not in self.lake_root

    def same_lake(self, root: str) -> bool:
        return digest(root) == self.lake


def record_of(run) -> Record | None:
    """The gate record of an MLflow run, or None when it has none (or only part of one)."""
    params = run.data.params
    try:
        return Record(params[f"{PREFIX}split"], params[f"{PREFIX}lake"],
                      params[f"{PREFIX}lake_root"], params[f"{PREFIX}ratings_table"],
                      float(params[f"{PREFIX}test_rmse"]))
    except (KeyError, ValueError):
        return None
