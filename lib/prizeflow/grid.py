"""The hyper-parameter grid: expansion from config and a parallel, optionally halving, runner.

The runner knows nothing about Spark: it calls ``evaluate(point, slot)`` from a pool of
``parallelism`` driver threads (the caller maps ``slot`` to a FAIR scheduler pool so concurrent
fits share the executors) and hands each result to ``on_result`` on the calling thread, in
completion order, so tracking and progress lines never race.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from typing import Callable

from prizeflow.config import GridSettings, HalvingSettings


RESIDUAL, PLAIN = "residual", "plain"


@dataclass(frozen=True)
class GridPoint:
    kind: str
    rank: int
    reg_param: float
    max_iter: int
    bias_reg: float | None  # None for plain ALS, which has no biases

    def params(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "GridPoint":
        """The point back from ``params()`` logged as text (an MLflow run's params)."""
        bias = params.get("bias_reg")
        return cls(kind=params["kind"], rank=int(params["rank"]),
                   reg_param=float(params["reg_param"]), max_iter=int(params["max_iter"]),
                   bias_reg=float(bias) if bias is not None else None)

    def label(self) -> str:
        bias = f" bias_reg={self.bias_reg:g}" if self.bias_reg is not None else ""
        return (f"{self.kind} rank={self.rank} reg_param={self.reg_param:g} "
                f"max_iter={self.max_iter}{bias}")

    def with_iterations(self, max_iter: int) -> "GridPoint":
        return replace(self, max_iter=max_iter)


@dataclass(frozen=True)
class PointResult:
    point: GridPoint  # as configured (full max_iter)
    iterations: int  # iterations actually run for this result
    validation_rmse: float
    seconds: float
    pruned: bool = False  # stopped early by successive halving


def expand(grid: GridSettings) -> list[GridPoint]:
    """Every combination of the grid's axes; plain ALS ignores bias_reg (one point, not many)."""
    points: list[GridPoint] = []
    for kind, rank, reg, iters, bias_reg in itertools.product(
            grid.kind, grid.rank, grid.reg_param, grid.max_iter, grid.bias_reg):
        point = GridPoint(kind, int(rank), float(reg), int(iters),
                          None if kind == PLAIN else float(bias_reg))
        if point not in points:
            points.append(point)
    return points


Evaluate = Callable[[GridPoint, int], tuple[float, float]]


def _run_round(jobs: list[tuple[GridPoint, int]], evaluate: Evaluate, parallelism: int,
               on_result: Callable[[GridPoint, int, float, float], None]) -> dict[GridPoint, tuple]:
    """Run (point, iterations) jobs; returns point -> (rmse, seconds)."""
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(parallelism):
        slots.put(slot)

    def task(point: GridPoint, iterations: int) -> tuple[float, float]:
        slot = slots.get()
        try:
            return evaluate(point.with_iterations(iterations), slot)
        finally:
            slots.put(slot)

    results: dict[GridPoint, tuple] = {}
    if parallelism == 1:
        for point, iterations in jobs:
            results[point] = task(point, iterations)
            on_result(point, iterations, *results[point])
        return results
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="grid") as pool:
        futures = {pool.submit(task, p, i): (p, i) for p, i in jobs}
        for future in as_completed(futures):
            point, iterations = futures[future]
            results[point] = future.result()
            on_result(point, iterations, *results[point])
    return results


def run(points: list[GridPoint], evaluate: Evaluate, parallelism: int,
        on_result: Callable[[PointResult], None],
        halving: HalvingSettings | None = None) -> list[PointResult]:
    """Evaluate every point; with halving enabled, points first run ``first_iter`` iterations and
    only the best ``keep_fraction`` (at least one) go on to their full ``max_iter``."""
    lock = threading.Lock()
    finished: list[PointResult] = []

    def record(result: PointResult) -> None:
        with lock:
            finished.append(result)
        on_result(result)

    if halving is None or not halving.enabled:
        _run_round([(p, p.max_iter) for p in points], evaluate, parallelism,
                   lambda p, i, rmse, s: record(PointResult(p, i, rmse, s)))
        return finished

    first_iter = int(halving.first_iter)
    early = [p for p in points if p.max_iter > first_iter]
    short = _run_round([(p, first_iter) for p in early], evaluate, parallelism,
                       lambda p, i, rmse, s: None)
    keep = max(1, math.ceil(len(early) * float(halving.keep_fraction))) if early else 0
    ranked = sorted(early, key=lambda p: short[p][0])
    survivors = set(ranked[:keep])
    for point in ranked[keep:]:
        record(PointResult(point, first_iter, short[point][0], short[point][1], pruned=True))
    full_jobs = [(p, p.max_iter) for p in points if p in survivors or p.max_iter <= first_iter]
    _run_round(full_jobs, evaluate, parallelism,
               lambda p, i, rmse, s: record(PointResult(
                   p, i, rmse, s + (short[p][1] if p in short else 0.0))))
    return finished


def best(results: list[PointResult]) -> PointResult:
    """The lowest validation RMSE among points that ran to their full max_iter."""
    complete = [r for r in results if not r.pruned]
    return min(complete, key=lambda r: (r.validation_rmse, r.point.rank, r.point.max_iter))
