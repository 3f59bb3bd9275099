"""Grid expansion, the parallel runner and successive halving, without Spark."""

import threading

import pytest

from prizeflow import grid
from prizeflow.grid import GridPoint
from prizeflow.config import GridSettings, HalvingSettings
from prizeflow.metrics import lift_pct


def _grid(**axes):
    base = {"kind": ["residual"], "rank": [4], "reg_param": [0.1], "max_iter": [10],
            "bias_reg": [5.0]}
    return GridSettings(**{**base, **axes})


def test_expand_is_the_product_and_plain_ignores_bias_reg():
    points = grid.expand(_grid(kind=["residual", "plain"], rank=[4, 8], bias_reg=[1, 5]))
    residual = [p for p in points if p.kind == "residual"]
    plain = [p for p in points if p.kind == "plain"]
    assert len(residual) == 4 and len(plain) == 2
    assert {p.bias_reg for p in plain} == {None}
    assert {(p.rank, p.bias_reg) for p in residual} == {(4, 1.0), (4, 5.0), (8, 1.0), (8, 5.0)}


def _fake_rmse(point: GridPoint, iterations: int) -> float:
    # Lower rank is better; more iterations help a little.
    return 1.0 + point.rank / 100 - iterations / 1000


@pytest.mark.parametrize("parallelism", [1, 3])
def test_run_reports_every_point_once_and_uses_distinct_slots(parallelism):
    points = grid.expand(_grid(rank=[2, 4, 8, 16, 32]))
    seen_slots = []
    lock = threading.Lock()

    def evaluate(point, slot):
        with lock:
            seen_slots.append(slot)
        return _fake_rmse(point, point.max_iter), 0.01

    reported = []
    results = grid.run(points, evaluate, parallelism, reported.append)
    assert sorted(r.point.rank for r in results) == [2, 4, 8, 16, 32]
    assert reported == results
    assert set(seen_slots) <= set(range(parallelism))
    assert grid.best(results).point.rank == 2
    assert all(r.validation_rmse == pytest.approx(_fake_rmse(r.point, 10)) for r in results)


def test_halving_prunes_after_short_runs_and_keeps_the_best_fraction():
    points = grid.expand(_grid(rank=[2, 4, 8, 16, 32, 64], max_iter=[12]))
    calls = []

    def evaluate(point, slot):
        calls.append((point.rank, point.max_iter))
        return _fake_rmse(point, point.max_iter), 1.0

    results = grid.run(points, evaluate, 2, lambda r: None,
                       HalvingSettings(enabled=True, first_iter=3, keep_fraction=0.34))
    assert sorted(calls) == sorted([(r, 3) for r in (2, 4, 8, 16, 32, 64)]
                                   + [(2, 12), (4, 12), (8, 12)])
    full = sorted(r.point.rank for r in results if not r.pruned)
    assert full == [2, 4, 8]  # ceil(6 * 0.34) = 3 survivors
    pruned = {r.point.rank: r for r in results if r.pruned}
    assert set(pruned) == {16, 32, 64} and all(r.iterations == 3 for r in pruned.values())
    survivor = next(r for r in results if r.point.rank == 2)
    assert survivor.iterations == 12 and survivor.seconds == pytest.approx(2.0)


def test_lift_is_relative_improvement_in_percent():
    # The Prize's own goal: 10% over Cinematch's quiz RMSE 0.9514 means RMSE 0.85626.
    assert lift_pct(0.9514, 0.85626) == pytest.approx(10.0, abs=1e-3)
    assert lift_pct(1.0, 1.1) == pytest.approx(-10.0)
    with pytest.raises(ValueError):
        lift_pct(0.0, 0.5)


def test_als_checkpoint_interval_checkpoints_the_last_iteration_at_one_checkpoint_more_at_most():
    from prizeflow.als import checkpoint_interval

    # MLlib checkpoints (and so keeps) the item factors of iteration k, from 0, when
    # k % interval == 0: the last iteration should be one of them, at most `configured` apart,
    # with at most one checkpoint more than `configured` makes; else `configured` stays.
    assert checkpoint_interval(10, 10) == 9  # iterations 0 and 9 instead of 0
    assert checkpoint_interval(10, 3) == 3
    assert checkpoint_interval(21, 10) == 10
    assert checkpoint_interval(20, 10) == 10  # 19 is prime: 20 checkpoints would be too many
    assert checkpoint_interval(1, 10) == 10  # the one iteration, 0, is always checkpointed
    for max_iter in range(2, 40):
        last = max_iter - 1
        for configured in range(1, 15):
            interval = checkpoint_interval(max_iter, configured)
            assert 1 <= interval <= configured
            if last % interval == 0:
                assert last // interval <= last // configured + 1
                assert not any(last % d == 0 for d in range(interval + 1, configured + 1))
            else:
                assert interval == configured
                assert all(last // d > last // configured + 1
                           for d in range(1, configured + 1) if last % d == 0)
