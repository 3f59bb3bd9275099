"""`FactorModel.top_n` (what `recommend`'s tasks run) in numpy alone: this checkout against a
reference checkout's `factors.py`, on a kept lake's `@champion` and real users' ratings.

    .venv/bin/python bench/bench_topn.py --work bench/out/scale-100480507 --reference /tmp/old \
        [--users 20000] [--runs 3]

``--work`` is a folder ``bench/bench_scale.py --keep`` left (``lake/`` and ``mlflow.db``).
``--users`` users, evenly spaced in the model's user ids, get their ratings from the lake's
``ratings`` table (its files read with pyarrow, the table's live files taken from the Delta
log). Both sides score them in the steps `recommend`'s task uses (2M cells at a time), top 10,
alternately ``--runs`` times each in this one process, and their lists must be identical. Prints
the medians (seconds and ms per user), the ratio and the command. One core; no Spark.
``--implicit-rank R`` gives A alone a random implicit-feedback term of rank R (issue 31): what
the term costs per user; the lists then differ by design and are not compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _live_files(table: Path) -> list[str]:
    """The table's data files now, from its JSON commits (a checkpoint is not read: refused)."""
    log = table / "_delta_log"
    if list(log.glob("*.checkpoint*.parquet")):
        raise SystemExit(f"{table}: the Delta log has a checkpoint; this reader needs JSON only")
    live: dict[str, None] = {}
    for commit in sorted(log.glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = None
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return [str(table / path) for path in live]


def _reference_factors(reference: Path):
    spec = importlib.util.spec_from_file_location(
        "reference_factors", reference / "lib" / "prizeflow" / "factors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _as(module, model):
    """``model`` rebuilt from ``module``'s classes (the same arrays)."""
    hood = model.neighbourhood
    if hood is not None:
        hood = module.Neighbourhood(**{f.name: getattr(hood, f.name)
                                       for f in dataclasses.fields(hood)})
    known = {f.name for f in dataclasses.fields(module.FactorModel)}
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name in known}
    fields["neighbourhood"] = hood
    if getattr(model, "implicit", None) is not None and "implicit" in known:
        # The reference's own class, so that its methods (not this checkout's) run.
        fields["implicit"] = module.ImplicitTerm(model.implicit.item_factors,
                                                 model.implicit.weights)
    return module.FactorModel(**fields)


def _with_random_implicit(model, rank: int):
    """The model with an implicit-feedback term of ``rank`` (seeded random arrays of the right
    shape, a fifth blend weight of 0.3): what that term costs, not what it ranks."""
    from prizeflow.factors import ImplicitTerm

    rng = np.random.default_rng(0)
    shape = (len(model.movie_ids), rank)
    term = ImplicitTerm(rng.normal(0, 0.1, shape).astype(np.float32),
                        rng.normal(0, 0.1, shape).astype(np.float32))
    hood = dataclasses.replace(model.neighbourhood,
                               weights=np.append(model.neighbourhood.weights[:4], 0.3))
    return dataclasses.replace(model, implicit=term, neighbourhood=hood)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--implicit-rank", type=int, default=0,
                        help="give A (only) a random implicit-feedback term of this rank: "
                             "times what the term adds; the lists then differ by design")
    args = parser.parse_args(argv)
    command = "python bench/bench_topn.py " + " ".join(sys.argv[1:] if argv is None else argv)

    import mlflow
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from prizeflow import registry
    from prizeflow.factors import Requests

    uri = f"sqlite:///{args.work.resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model, version = registry.load_model("prizeflow-als", "champion")
    users = model.user_ids[:: max(1, len(model.user_ids) // args.users)][: args.users]
    ratings = ds.dataset(_live_files(args.work / "lake" / "ratings"), format="parquet").to_table(
        columns=["user_id", "movie_id", "rating"],
        filter=pc.field("user_id").isin(users.astype("int32")))
    history = (ratings.column("user_id").to_numpy(), ratings.column("movie_id").to_numpy(),
               ratings.column("rating").to_numpy().astype(np.float32))
    requests = Requests.by_user(users.astype(np.int64), np.zeros(len(users), dtype=np.int64),
                                history)
    order = np.argsort(requests.history_owner, kind="stable")
    h_owner = requests.history_owner[order]
    h_movies, h_ratings = requests.history_movies[order], requests.history_ratings[order]
    owners = requests.owner_users
    this = model.movie_side().with_users(model.user_ids, model.user_bias, model.user_factors,
                                         model.user_has_factors, model.user_time)
    sides = {"A": _with_random_implicit(this, args.implicit_rank) if args.implicit_rank else this,
             "B": _as(_reference_factors(args.reference), this)}
    step = max(1, 2_000_000 // len(model.movie_ids))  # recommend's task: 2M cells at a time

    def lists(side):
        out = []
        for start in range(0, len(owners), step):
            stop = min(start + step, len(owners))
            lo, hi = np.searchsorted(h_owner, [start, stop])
            out.append(side.top_n(owners[start:stop], h_owner[lo:hi] - start, h_movies[lo:hi],
                                  h_ratings[lo:hi], 10))
        return [np.concatenate(column) for column in zip(*out)]

    times: dict[str, list[float]] = {"A": [], "B": []}
    results = {}
    for _ in range(args.runs):
        for name, side in sides.items():
            started = time.perf_counter()
            results[name] = lists(side)
            times[name].append(time.perf_counter() - started)
    same_ids = all(np.array_equal(a, b) for a, b in zip(results["A"][:3], results["B"][:3]))
    largest = float(np.abs(results["A"][3] - results["B"][3]).max())
    print(f"model version {version}: {len(model.user_ids):,} users, {len(model.movie_ids):,} "
          f"movies, rank {model.rank}; {len(owners):,} users scored, {ratings.num_rows:,} "
          f"ratings as their history")
    for name in sides:
        median = statistics.median(times[name])
        print(f"{name}: runs {', '.join(f'{t:.2f}' for t in times[name])} s; median "
              f"{median:.2f} s, {1000 * median / len(owners):.3f} ms per user")
    print(f"A/B (medians): {statistics.median(times['A']) / statistics.median(times['B']):.3f}")
    print(f"same owners, ranks and movies: {same_ids}; largest predicted-rating difference: "
          f"{largest:.3g}")
    print(f"\ncommand: {command}")
    if args.implicit_rank:
        return 0  # A ranks by a term B does not have
    return 0 if same_ids and largest <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
