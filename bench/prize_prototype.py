"""Experiment for issue 31's quality target (NOT part of the pipeline): which of the Prize's
ingredients (time-aware baselines, implicit feedback) move prizeflow's three-part blend on
MovieLens 100K, and by how much?

    .venv/bin/python bench/prize_prototype.py [--data ../shared/data/ml-100k/u.data]

Plain numpy, the folds and protocol of ``blend_prototype.py`` (5 seeded random folds; 10% of all
held out from the 80% as validation; blend weights learned there; every part refitted on the 80%
before the test). Variants, each the three-part blend (baseline, rank-50 residual ALS term,
damped item kNN term) plus or minus one ingredient:
- static: today's design, mu + b_u + b_i;
- time: the baseline is mu + b_u + alpha_u dev_u(t) + b_i + b_i,bin(t) (movie bias per time
  bin, user drift around the user's mean rating day); ALS and kNN fit its residuals;
- time+day: the same plus a per-(user, day) bias;
- implicit: an extra blend feature, x_u . y_i of an implicit-feedback ALS (Hu, Koren, Volinsky)
  on the binary who-rated-what matrix of the training part;
- asym: an extra blend feature z_u . w_i, z_u = |N(u)|^-1/2 sum of the implicit item factors of
  the movies u rated, w_i a ridge per movie on the baseline residuals (an asymmetric user term
  whose user side is built only from which movies the user rated);
- ...+support: every part also times 1 / sqrt(1 + n_u) (blend weights that follow how much the
  user rated).
Writes bench/out/prize-prototype.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from blend_prototype import DEFAULT_DATA, fit_als, fit_biases, knn_sums, rmse

HERE = Path(__file__).resolve().parent
BETA = 0.4
OPTIONS = {"implicit_rank": 20, "alpha": 20.0, "asym_reg": 25.0}


def deviation(days, user_mean_day):
    gap = days - user_mean_day
    return np.sign(gap) * np.abs(gap) ** BETA


def fit_time_baseline(u, i, d, r, n_users, n_items, bins, bin_of, reg=3.0, reg_bin=25.0,
                      reg_alpha=50.0, reg_day=None, passes=4):
    """Alternating ridge passes; returns a function scoring (u, i, day)."""
    mu = r.mean()
    mean_day = np.bincount(u, d, n_users) / np.maximum(np.bincount(u, minlength=n_users), 1)
    dev = deviation(d, mean_day[u])
    b_bin = bin_of(d)
    bu, au, bi = np.zeros(n_users), np.zeros(n_users), np.zeros(n_items)
    bib = np.zeros((n_items, bins))
    day_key = u * 100000 + d
    keys, day_index = np.unique(day_key, return_inverse=True)
    bud = np.zeros(len(keys))
    n_u = np.bincount(u, minlength=n_users)
    for _ in range(passes):
        user_part = bu[u] + au[u] * dev + (bud[day_index] if reg_day else 0.0)
        bi = np.bincount(i, r - mu - user_part - bib[i, b_bin], n_items) / (
            np.bincount(i, minlength=n_items) + reg)
        flat = i * bins + b_bin
        bib = (np.bincount(flat, r - mu - user_part - bi[i], n_items * bins)
               / (np.bincount(flat, minlength=n_items * bins) + reg_bin)).reshape(n_items, bins)
        res = r - mu - bi[i] - bib[i, b_bin] - (bud[day_index] if reg_day else 0.0)
        s_d = np.bincount(u, dev, n_users)
        s_dd = np.bincount(u, dev * dev, n_users)
        s_r = np.bincount(u, res, n_users)
        s_rd = np.bincount(u, res * dev, n_users)
        a11, a12, a22 = n_u + reg, s_d, s_dd + reg_alpha
        det = a11 * a22 - a12 * a12
        bu = (a22 * s_r - a12 * s_rd) / det
        au = (a11 * s_rd - a12 * s_r) / det
        if reg_day:
            res = r - mu - bi[i] - bib[i, b_bin] - bu[u] - au[u] * dev
            bud = np.bincount(day_index, res, len(keys)) / (
                np.bincount(day_index, minlength=len(keys)) + reg_day)
    lookup = dict(zip(keys.tolist(), range(len(keys))))

    def score(qu, qi, qd):
        qb = np.clip(bin_of(qd), 0, bins - 1)
        out = mu + bi[qi] + bib[qi, qb] + bu[qu] + au[qu] * deviation(qd, mean_day[qu])
        if reg_day:
            idx = np.array([lookup.get(int(k), -1) for k in qu * 100000 + qd])
            out = out + np.where(idx >= 0, bud[np.maximum(idx, 0)], 0.0)
        return out
    return score


def static_baseline(u, i, r, n_users, n_items):
    """Today's mu + b_u + b_i (blend_prototype's fit), scoring (u, i, day) like the time one."""
    mu, bu, bi = fit_biases(u, i, r, n_users, n_items)
    return lambda qu, qi, qd: mu + bu[qu] + bi[qi]


def implicit_als(u, i, n_users, n_items, rank=20, reg=0.1, alpha=20.0, iterations=10, seed=3):
    """Hu-Koren-Volinsky ALS on the binary rated matrix (dense: fine at 943 x 1682)."""
    preference = np.zeros((n_users, n_items))
    preference[u, i] = 1.0
    confidence = 1.0 + alpha * preference
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n_users, rank))
    y = rng.normal(0, 0.1, (n_items, rank))
    eye = np.eye(rank)

    def half(fixed, conf, pref):
        gram = fixed.T @ fixed
        out = np.zeros((conf.shape[0], rank))
        for row in range(conf.shape[0]):
            c = conf[row]
            a = gram + (fixed.T * (c - 1.0)) @ fixed + reg * eye
            out[row] = np.linalg.solve(a, (fixed.T * c) @ pref[row])
        return out
    for _ in range(iterations):
        x = half(y, confidence, preference)
        y = half(x, confidence.T, preference.T)
    return x, y


def asymmetric_term(u, i, residual, n_users, n_items, item_factors, reg=25.0):
    counts = np.bincount(u, minlength=n_users)
    z = np.zeros((n_users, item_factors.shape[1]))
    np.add.at(z, u, item_factors[i])
    z /= np.sqrt(np.maximum(counts, 1))[:, None]
    rank = z.shape[1]
    w = np.zeros((n_items, rank))
    order = np.argsort(i, kind="stable")
    su, si, sr = u[order], i[order], residual[order]
    bounds = np.searchsorted(si, np.arange(n_items + 1))
    for item in range(n_items):
        a, b = bounds[item], bounds[item + 1]
        if a < b:
            f = z[su[a:b]]
            w[item] = np.linalg.solve(f.T @ f + reg * np.eye(rank), f.T @ sr[a:b])
    return z, w


def parts(variant, tu, ti, td, tr, qu, qi, qd, n_users, n_items, bins, bin_of):
    if variant.startswith("time"):
        base = fit_time_baseline(tu, ti, td, tr, n_users, n_items, bins, bin_of,
                                 reg_day=(5.0 if "day" in variant else None))
    else:
        base = static_baseline(tu, ti, tr, n_users, n_items)
    base_t, base_q = base(tu, ti, td), base(qu, qi, qd)
    resid = tr - base_t
    p50, q50 = fit_als(tu, ti, resid, n_users, n_items, 50, 0.15, 15, seed=2)
    num, den = knn_sums(tu, ti, resid, qu, qi, n_users, n_items, k=40)
    columns = [np.ones(len(qu)), base_q, (p50[qu] * q50[qi]).sum(1), num / (4.0 + den)]
    if "asymq" in variant:
        z, w = asymmetric_term(tu, ti, resid, n_users, n_items, q50, reg=OPTIONS["asym_reg"])
        columns.append((z[qu] * w[qi]).sum(1))
    elif "implicit" in variant or "asym" in variant:
        x, y = implicit_als(tu, ti, n_users, n_items, rank=OPTIONS["implicit_rank"],
                            alpha=OPTIONS["alpha"])
        if "implicit" in variant:
            columns.append((x[qu] * y[qi]).sum(1))
        if "asym" in variant:
            z, w = asymmetric_term(tu, ti, resid, n_users, n_items, y, reg=OPTIONS["asym_reg"])
            columns.append((z[qu] * w[qi]).sum(1))
    if "support" in variant:
        # Each part's weight depends on how much the user rated: the parts times
        # 1 / sqrt(1 + n_u) as extra features.
        counts = np.bincount(tu, minlength=n_users)
        scale = 1.0 / np.sqrt(1.0 + counts[qu])
        columns += [c * scale for c in columns[1:]] + [scale]
    return np.column_stack(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--variants", nargs="+",
                        default=["static", "time", "time+day", "static+implicit",
                                 "static+asym", "time+implicit+asym"])
    parser.add_argument("--implicit-rank", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=20.0)
    parser.add_argument("--asym-reg", type=float, default=25.0)
    args = parser.parse_args()
    OPTIONS.update(implicit_rank=args.implicit_rank, alpha=args.alpha, asym_reg=args.asym_reg)
    data = np.loadtxt(args.data, dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(float)
    days = data[:, 3] // 86400
    first, span = days.min(), days.max() - days.min() + 1
    bins = args.bins

    def bin_of(d):
        return np.clip((d - first) * bins // span, 0, bins - 1)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    fold_of = np.random.default_rng(0).permutation(len(ratings)) % args.folds
    rows = []
    for fold in range(args.folds):
        started = time.monotonic()
        train_idx, test_idx = np.nonzero(fold_of != fold)[0], np.nonzero(fold_of == fold)[0]
        held = np.random.default_rng(fold).random(len(train_idx)) < 0.125
        fit_idx, val_idx = train_idx[~held], train_idx[held]
        row = {}
        for variant in args.variants:
            design_val = parts(variant, users[fit_idx], items[fit_idx], days[fit_idx],
                               ratings[fit_idx], users[val_idx], items[val_idx], days[val_idx],
                               n_users, n_items, bins, bin_of)
            weights = np.linalg.lstsq(design_val, ratings[val_idx], rcond=None)[0]
            design_test = parts(variant, users[train_idx], items[train_idx], days[train_idx],
                                ratings[train_idx], users[test_idx], items[test_idx],
                                days[test_idx], n_users, n_items, bins, bin_of)
            row[variant] = rmse(design_test @ weights, ratings[test_idx])
            row[variant + " baseline"] = rmse(design_test[:, 1], ratings[test_idx])
        rows.append(row)
        print(f"fold {fold}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items())
              + f"  ({time.monotonic() - started:.0f} s)", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("mean:   " + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "prize-prototype.json").write_text(json.dumps({"folds": rows, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()
