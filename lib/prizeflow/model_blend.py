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

from prizeflow.factors import FactorModel, lookup, rank_catalogue

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

    def movie_side(self) -> "BlendedModel":
        """Each member without its users (:meth:`FactorModel.movie_side`)."""
        return self.with_members(member.movie_side() for member in self.members)

    def with_members(self, members) -> "BlendedModel":
        """The same blend over other members (a Spark task's: each member's movie side plus the
        task's users)."""
        return BlendedModel(tuple(members), self.versions, self.weights, self.weights_without,
                            self.low, self.high)

    def top_n(self, requests_users: np.ndarray, history_owner: np.ndarray,
              history_movies: np.ndarray, history_ratings: np.ndarray, n: int,
              history_days: np.ndarray | None = None):
        """:meth:`FactorModel.top_n` for the blend: the shortlist by the weighted sum of the
        members' shortlist scores (each member's rule without its neighbour term), ranked by
        the blend of the members' own clipped predictions; the same flat arrays."""
        users = np.asarray(requests_users, dtype=np.int64)
        movie_ids = self.movie_ids
        scores = np.zeros((len(users), len(movie_ids)), dtype=np.float32)
        vectors = []
        for weight, member in zip(self.weights[1:], self.members):
            member_vectors = member.implicit_vectors(len(users), history_owner, history_movies)
            positions, _ = lookup(movie_ids, member.movie_ids)
            scores[:, positions] += np.float32(weight) * member.shortlist_scores(users,
                                                                                 member_vectors)
            vectors.append(member_vectors)

        def score_pairs(requests) -> np.ndarray:
            raw = np.full(len(requests.movies), self.weights[0], dtype=np.float64)
            for weight, member, member_vectors in zip(self.weights[1:], self.members, vectors):
                raw += weight * member.clip(member.combine(member.parts(requests,
                                                                        member_vectors)))
            return raw

        return rank_catalogue(movie_ids, scores, users, history_owner, history_movies,
                              history_ratings, history_days, n, score_pairs,
                              lambda raw: np.clip(raw, self.low, self.high))

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
        missing = {"versions", "weights", "weights_without", "low", "high",
                   "members"} - set(manifest)
        if missing:
            raise ValueError(f"blend folder {folder}: {MANIFEST} lacks {sorted(missing)}")
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
