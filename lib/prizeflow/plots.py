"""Every figure prizeflow draws (matplotlib, no display needed): the grid's validation RMSE,
the model against its baselines, the lift, the rating distribution. ``train`` logs the first two
into its run; ``notebooks/04_explore.py`` shows them all."""

from __future__ import annotations

from prizeflow.columns import RATING
from prizeflow.grid import PointResult

# Baselines that are published constants, not measured on the run's data.
PUBLISHED_BASELINES = frozenset({"cinematch"})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(figure) -> None:
    _pyplot().close(figure)


def grid_heatmap(results: list[PointResult], kind: str):
    """Validation RMSE over rank x reg_param (the best over the other axes) for one kind."""
    import numpy as np

    plt = _pyplot()

    chosen = [r for r in results if r.point.kind == kind]
    ranks = sorted({r.point.rank for r in chosen})
    regs = sorted({r.point.reg_param for r in chosen})
    grid = np.full((len(ranks), len(regs)), np.nan)
    for r in chosen:
        i, j = ranks.index(r.point.rank), regs.index(r.point.reg_param)
        grid[i, j] = np.nanmin([grid[i, j], r.validation_rmse])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(regs), 1.2 + 0.7 * len(ranks)))
    image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(regs)), [f"{v:g}" for v in regs])
    ax.set_yticks(range(len(ranks)), [str(v) for v in ranks])
    ax.set_xlabel("regParam")
    ax.set_ylabel("rank")
    ax.set_title(f"validation RMSE ({kind} ALS)")
    for i in range(len(ranks)):
        for j in range(len(regs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center",
                        color=_text_colour(image.cmap(image.norm(grid[i, j]))), fontsize=8)
    fig.colorbar(image, ax=ax, label="validation RMSE (lower is better)")
    fig.tight_layout()
    return fig


def relative_luminance(rgba) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components 0..1)."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in rgba[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _text_colour(rgba) -> str:
    """Black or white, whichever contrasts more with the cell (at least 4.58:1 either way)."""
    luminance = relative_luminance(rgba)
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def model_vs_baselines(test_rmse: float, baselines: dict[str, float], model_name: str = "model"):
    """Test RMSE of the model and each baseline, from zero so bar heights compare honestly;
    a published figure (Cinematch) is hatched and labelled as such, not drawn as a measurement."""
    plt = _pyplot()
    names = [model_name] + [f"{n}\n(published)" if n in PUBLISHED_BASELINES else n
                            for n in baselines]
    values = [test_rmse, *baselines.values()]
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(names), 3.5))
    bars = ax.bar(names, values, color=["tab:green"] + ["tab:gray"] * len(baselines))
    for bar, name in zip(bars[1:], baselines):
        if name in PUBLISHED_BASELINES:
            bar.set(facecolor="white", edgecolor="tab:gray", hatch="//")
    ax.bar_label(bars, fmt="%.4f")
    ax.set_ylabel("test RMSE")
    ax.set_ylim(0, max(values) * 1.12)
    ax.set_title("model vs baselines (lower is better)")
    fig.tight_layout()
    return fig


def rating_histogram(distribution):
    """Bar chart of a ``rating_distribution`` collected to pandas."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar([f"{r:g}" for r in distribution[RATING]], distribution["share"] * 100,
                  color="tab:blue")
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xlabel(RATING)
    ax.set_ylabel("share of ratings (%)")
    ax.set_title(f"rating distribution ({int(distribution['ratings'].sum()):,} ratings)")
    fig.tight_layout()
    return fig


def lift_bars(lift_pct: dict[str, float]):
    """The model's lift over each baseline in percent (the Prize's measure: 10% over Cinematch)."""
    plt = _pyplot()
    names = list(lift_pct)
    values = [lift_pct[n] for n in names]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 3.2))
    bars = ax.bar(names, values, color=["tab:green" if v > 0 else "tab:red" for v in values])
    ax.bar_label(bars, fmt="%+.2f%%", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("lift over baseline (%)")
    ax.set_title("lift = (baseline - model) / baseline")
    fig.tight_layout()
    return fig
