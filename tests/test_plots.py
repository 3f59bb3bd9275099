"""The run's plots say what they show: readable cell labels, a labelled colour bar, bars from
zero, a published baseline marked as published, and the model named."""

from prizeflow import plots
from prizeflow.grid import GridPoint
from prizeflow.grid import PointResult


def _result(rank: int, reg: float, rmse: float) -> PointResult:
    return PointResult(GridPoint("residual", rank, reg, 10, 3.0), 10, rmse, 1.0)


def _contrast(first, second) -> float:
    light, dark = sorted((plots.relative_luminance(first),
                          plots.relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_grid_heatmap_labels_are_readable_and_the_colour_bar_is_named():
    from matplotlib.colors import to_rgba

    rmses = [0.90 + 0.01 * i for i in range(12)]
    results = [_result(rank, reg, rmse) for (rank, reg), rmse in zip(
        [(r, g) for r in (10, 20, 50, 100) for g in (0.05, 0.1, 0.15)], rmses)]
    fig = plots.grid_heatmap(results, "residual")
    heatmap, colour_bar = fig.axes
    image = heatmap.images[0]
    assert len(heatmap.texts) == 12
    colours = set()
    for text in heatmap.texts:
        cell = image.cmap(image.norm(float(text.get_text())))
        # WCAG AA for normal text: 4.5:1 (white on the bright-yellow best cell was about 1.1:1).
        assert _contrast(cell, to_rgba(text.get_color())) >= 4.5, text.get_text()
        colours.add(text.get_color())
    assert colours == {"black", "white"}  # viridis runs from bright to dark
    assert colour_bar.get_ylabel() == "validation RMSE (lower is better)"


def test_model_vs_baselines_starts_at_zero_and_marks_the_published_figure():
    fig = plots.model_vs_baselines(0.81, {"global_mean": 1.04, "bias": 0.88,
                                             "cinematch": 0.9474}, "blend\n(ALS + neighbours)")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == ["blend\n(ALS + neighbours)", "global_mean", "bias", "cinematch\n(published)"]
    hatches = [bar.get_hatch() for bar in ax.patches]
    assert hatches == [None, None, None, "//"]
    assert [t.get_text() for t in ax.texts] == ["0.8100", "1.0400", "0.8800", "0.9474"]
