"""How much parallel CPU this machine gives two processes: the same CPU-bound work in 1 process,
then in 2 at once (medians of 3); speed-up = 2 x t(1 unit alone) / t(2 units at once). A pure
Python loop and numpy matmul with one BLAS thread each. Reference for bench_parallelism.py.

    .venv/bin/python bench/cpucheck.py
"""
import multiprocessing as mp, os, time
os.environ["OPENBLAS_NUM_THREADS"] = "1"; os.environ["OMP_NUM_THREADS"] = "1"

def loop(n):
    t = time.perf_counter(); s = 0
    for i in range(n): s += i * i % 7
    return time.perf_counter() - t

def mat(n):
    import numpy as np
    a = np.random.rand(600, 600)
    t = time.perf_counter()
    for _ in range(n): a = (a @ a) / 600.0
    return time.perf_counter() - t

if __name__ == "__main__":
    for name, fn, n in (("python loop", loop, 30_000_000), ("numpy matmul", mat, 150)):
        one = []
        for _ in range(3):
            one.append(fn(n))
        with mp.Pool(2) as pool:
            two = []
            for _ in range(3):
                t = time.perf_counter(); pool.map(fn, [n, n]); two.append(time.perf_counter() - t)
        o, w = sorted(one)[1], sorted(two)[1]
        print(f"{name}: 1 process {o:.2f} s for one unit; 2 processes {w:.2f} s for two units; "
              f"parallel speed-up {2 * o / w:.2f}x (ideal 2.00x)", flush=True)
