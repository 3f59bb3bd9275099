"""Experiment for issue 3's quality target (NOT part of the pipeline): would blending residual
ALS with neighbourhood models reach mean 5-fold test RMSE <= 0.905 on MovieLens 100K?

    .venv/bin/python bench/blend_prototype.py [--data ../shared/data/ml-100k/u.data]

Everything here is plain numpy, single process, so the answer comes in about a minute and a half
before anything is built in Spark. Protocol: 5 random folds (seeded permutation, not prizeflow's
hash folds); within the 80% training part, 12.5% (10% of all) is held out as validation. Each
model is fitted on the rest and scored on validation; a least-squares blend of the predictions
is learned there; then every model is refitted on the whole 80% and the blend scores the fold.
Models, all on the same mu + b_u + b_i baseline (reg 3, 3 passes, as prizeflow):
- als / als50: ALS-WR on the baseline residuals (rank 20 reg 0.1 / rank 50 reg 0.15, 15 iterations);
- knn_base: item-item kNN on baseline residuals (shrunk cosine of residuals, k = 40, shrink 100);
- knn_als: the same kNN on the residuals of the rank-20 ALS;
- uknn: user-user kNN on baseline residuals (k = 60).
Prints per-fold and mean RMSEs and writes bench/out/blend-prototype.json.

    .venv/bin/python bench/blend_prototype.py --mode damping

The design chosen for the pipeline: a blend of three parts only (baseline, rank-50 ALS term,
item kNN term) with the kNN mean damped, sum s r / (damping + sum s), for several dampings;
writes bench/out/blend-damping.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "ml-100k" / "u.data"


def fit_biases(u, i, r, n_users, n_items, reg=3.0, passes=3):
    mu = r.mean()
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    for _ in range(passes):
        bi = np.bincount(i, r - mu - bu[u], n_items) / (np.bincount(i, minlength=n_items) + reg)
        bu = np.bincount(u, r - mu - bi[i], n_users) / (np.bincount(u, minlength=n_users) + reg)
    return mu, bu, bi


def _solve_side(fixed, own, other, values, size, rank, reg):
    """One ALS half-step: ridge per entity with ALS-WR's regularisation reg * n_ratings."""
    order = np.argsort(own, kind="stable")
    own, other, values = own[order], other[order], values[order]
    bounds = np.searchsorted(own, np.arange(size + 1))
    out = np.zeros((size, rank))
    eye = np.eye(rank)
    for entity in range(size):
        start, stop = bounds[entity], bounds[entity + 1]
        if start < stop:
            f = fixed[other[start:stop]]
            out[entity] = np.linalg.solve(f.T @ f + reg * (stop - start) * eye,
                                          f.T @ values[start:stop])
    return out


def fit_als(u, i, residual, n_users, n_items, rank, reg, iterations, seed):
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 0.1, (n_users, rank))
    items = rng.normal(0, 0.1, (n_items, rank))
    for _ in range(iterations):
        users = _solve_side(items, u, i, residual, n_users, rank, reg)
        items = _solve_side(users, i, u, residual, n_items, rank, reg)
    return users, items


def knn_residual(u, i, residual, qu, qi, n_users, n_items, k, shrink=100.0):
    """Item-item kNN: the weighted mean of u's residuals on the k items most similar to i."""
    num, den = knn_sums(u, i, residual, qu, qi, n_users, n_items, k, shrink)
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def predictions(tu, ti, tr, qu, qi, n_users, n_items):
    mu, bu, bi = fit_biases(tu, ti, tr, n_users, n_items)
    base_t, base_q = mu + bu[tu] + bi[ti], mu + bu[qu] + bi[qi]
    resid = tr - base_t
    p20, q20 = fit_als(tu, ti, resid, n_users, n_items, 20, 0.1, 15, seed=1)
    p50, q50 = fit_als(tu, ti, resid, n_users, n_items, 50, 0.15, 15, seed=2)
    als_t = base_t + (p20[tu] * q20[ti]).sum(1)
    als_q = base_q + (p20[qu] * q20[qi]).sum(1)
    return {
        "bias": base_q,
        "als": als_q,
        "als50": base_q + (p50[qu] * q50[qi]).sum(1),
        "knn_base": base_q + knn_residual(tu, ti, resid, qu, qi, n_users, n_items, k=40),
        "knn_als": als_q + knn_residual(tu, ti, tr - als_t, qu, qi, n_users, n_items, k=40),
        # user-user: the same computation with the roles of users and items swapped
        "uknn": base_q + knn_residual(ti, tu, resid, qi, qu, n_items, n_users, k=60),
    }


def knn_sums(u, i, residual, qu, qi, n_users, n_items, k, shrink=100.0):
    """Numerator and denominator of u's similarity-weighted mean residual on the k items most
    similar to i (shrunk cosine of residuals, positive similarities only)."""
    resid = np.zeros((n_users, n_items))
    rated = np.zeros((n_users, n_items))
    resid[u, i], rated[u, i] = residual, 1.0
    squares = (resid ** 2).T @ rated
    common = rated.T @ rated
    similarity = (resid.T @ resid) / (np.sqrt(squares * squares.T) + 1e-9) * common / (common + shrink)
    np.fill_diagonal(similarity, 0.0)
    rated_by = [np.nonzero(rated[user])[0] for user in range(n_users)]
    num, den = np.zeros(len(qu)), np.zeros(len(qu))
    for row, (user, item) in enumerate(zip(qu, qi)):
        neighbours = rated_by[user]
        weights = similarity[item, neighbours]
        if len(weights) > k:
            keep = np.argpartition(-weights, k)[:k]
            neighbours, weights = neighbours[keep], weights[keep]
        positive = weights > 0
        num[row] = (weights[positive] * resid[user, neighbours[positive]]).sum()
        den[row] = weights[positive].sum()
    return num, den


def three_parts(tu, ti, tr, qu, qi, n_users, n_items):
    mu, bu, bi = fit_biases(tu, ti, tr, n_users, n_items)
    resid = tr - (mu + bu[tu] + bi[ti])
    p50, q50 = fit_als(tu, ti, resid, n_users, n_items, 50, 0.15, 15, seed=2)
    num, den = knn_sums(tu, ti, resid, qu, qi, n_users, n_items, k=40)
    return mu + bu[qu] + bi[qi], (p50[qu] * q50[qi]).sum(1), num, den


def damping_design(parts, damping):
    baseline, factor, num, den = parts
    term = num / (damping + den) if damping > 0 else np.where(den > 0, num / np.maximum(den, 1e-12), 0)
    return np.column_stack([np.ones(len(baseline)), baseline, factor, term])


def rmse(prediction, truth):
    return float(np.sqrt(np.mean((np.clip(prediction, 1, 5) - truth) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--mode", choices=("all", "damping"), default="all")
    args = parser.parse_args()
    data = np.loadtxt(args.data, dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(float)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    fold_of = np.random.default_rng(0).permutation(len(ratings)) % args.folds
    if args.mode == "damping":
        return damping_mode(args, users, items, ratings, n_users, n_items, fold_of)
    rows = []
    for fold in range(args.folds):
        started = time.monotonic()
        train_idx, test_idx = np.nonzero(fold_of != fold)[0], np.nonzero(fold_of == fold)[0]
        held = np.random.default_rng(fold).random(len(train_idx)) < 0.125
        fit_idx, val_idx = train_idx[~held], train_idx[held]
        on_val = predictions(users[fit_idx], items[fit_idx], ratings[fit_idx],
                             users[val_idx], items[val_idx], n_users, n_items)
        names = list(on_val)
        design = np.column_stack([np.ones(len(val_idx))] + [on_val[n] for n in names])
        weights = np.linalg.lstsq(design, ratings[val_idx], rcond=None)[0]
        on_test = predictions(users[train_idx], items[train_idx], ratings[train_idx],
                              users[test_idx], items[test_idx], n_users, n_items)
        blend = np.column_stack([np.ones(len(test_idx))] + [on_test[n] for n in names]) @ weights
        row = {n: rmse(on_test[n], ratings[test_idx]) for n in names}
        row["blend"] = rmse(blend, ratings[test_idx])
        rows.append(row)
        print(f"fold {fold}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items())
              + f"  ({time.monotonic() - started:.0f} s)", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("mean:   " + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    print("command: .venv/bin/python bench/blend_prototype.py" +
          ("" if args.data == DEFAULT_DATA else f" --data {args.data}"))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "blend-prototype.json").write_text(json.dumps({"folds": rows, "mean": mean}, indent=2))


def damping_mode(args, users, items, ratings, n_users, n_items, fold_of) -> None:
    dampings = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    rows = []
    for fold in range(args.folds):
        train_idx, test_idx = np.nonzero(fold_of != fold)[0], np.nonzero(fold_of == fold)[0]
        held = np.random.default_rng(fold).random(len(train_idx)) < 0.125
        fit_idx, val_idx = train_idx[~held], train_idx[held]
        on_val = three_parts(users[fit_idx], items[fit_idx], ratings[fit_idx],
                             users[val_idx], items[val_idx], n_users, n_items)
        on_test = three_parts(users[train_idx], items[train_idx], ratings[train_idx],
                              users[test_idx], items[test_idx], n_users, n_items)
        row = {}
        for damping in dampings:
            weights = np.linalg.lstsq(damping_design(on_val, damping), ratings[val_idx],
                                      rcond=None)[0]
            row[f"damping {damping:g}"] = rmse(damping_design(on_test, damping) @ weights,
                                               ratings[test_idx])
        rows.append(row)
        print(f"fold {fold}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("mean:   " + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    print("command: .venv/bin/python bench/blend_prototype.py --mode damping")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "blend-damping.json").write_text(json.dumps({"folds": rows, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()
