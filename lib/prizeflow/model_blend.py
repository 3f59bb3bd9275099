"""A blend of registered models ("merge the teams"): numpy only, as the served pyfunc needs it.

prediction = clip(w0 + w1 * p1 + ... + wk * pk), where p_i is member i's own clipped prediction
(each member a :class:`prizeflow.factors.FactorModel`, scored by its own rule). Two weight
vectors, both learned on the validation split by :mod:`prizeflow.blending`: one over the
members' predictions with a history, one over their predictions without one (what each member
predicts when the request brings no history), as a single model keeps both.

Saved as a folder: ``blend.json`` (versions, weights, scale) and one ``member_<i>.npz`` per
member, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prizeflow.factors import FactorModel

MANIFEST = "blend.json"


def member_column(index: int, with_history: bool = True) -> str:
    """The column holding member ``index``'s prediction where a blend is scored in Spark."""
    return f"_pf_member_{index}" + ("" if with_history else "_without")


@dataclass(frozen=True)
class BlendedModel:
    members: tuple[FactorModel, ...]
    versions: tuple[int, ...]  # each member's registered version, in member order
    weights: tuple[float, ...]  # intercept, then one per member (with a history)
    weights_without: tuple[float, ...]  # the same without a history
    low: float
    high: float

    def __post_init__(self) -> None:
        size = len(self.members) + 1
        if len(self.versions) != len(self.members) or len(self.weights) != size \
                or len(self.weights_without) != size:
            raise ValueError(f"a blend of {len(self.members)} members needs {len(self.members)} "
                             f"versions and {size} weights per set")

    @property
    def user_ids(self) -> np.ndarray:
        return np.unique(np.concatenate([m.user_ids for m in self.members]))

    @property
    def movie_ids(self) -> np.ndarray:
        return np.unique(np.concatenate([m.movie_ids for m in self.members]))

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in self.members)

    def label(self) -> str:
        return "blend of " + ", ".join(f"v{v}" for v in self.versions)

    def combine(self, predictions: list[np.ndarray], with_history: bool = True) -> np.ndarray:
        """The clipped blend of the members' predictions (one array per member, in order)."""
        weights = self.weights if with_history else self.weights_without
        raw = np.full(len(predictions[0]), weights[0], dtype=np.float64)
        for weight, values in zip(weights[1:], predictions):
            raw += weight * np.asarray(values, dtype=np.float64)
        return np.clip(raw, self.low, self.high)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for index, member in enumerate(self.members):
            name = f"member_{index}.npz"
            member.save(folder / name)
            names.append(name)
        (folder / MANIFEST).write_text(json.dumps({
            "versions": list(self.versions), "weights": list(self.weights),
            "weights_without": list(self.weights_without), "low": self.low,
            "high": self.high, "members": names}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "BlendedModel":
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        members = []
        for name in manifest["members"]:
            path = (folder / name).resolve()
            if path.parent != folder.resolve():  # a member file names no other folder
                raise ValueError(f"blend member {name!r} is not a file of the blend's folder")
            members.append(FactorModel.load(path))
        return cls(tuple(members), tuple(int(v) for v in manifest["versions"]),
                   tuple(float(w) for w in manifest["weights"]),
                   tuple(float(w) for w in manifest["weights_without"]),
                   float(manifest["low"]), float(manifest["high"]))
