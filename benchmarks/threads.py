"""Benchmark: the small linear algebra of an ALWS step with one thread and with all of them.

The leave-one-out selection runs one symmetric eigendecomposition per bandwidth on at most
``select_max`` (500) points, and every step factorises an ``N x N`` kernel matrix. On a busy
machine, a multi-threaded call on a small matrix waits for threads that other processes hold.
This measures, for each call size, the median time with ``torch.set_num_threads(1)`` and with
every core, so that :data:`alws.linalg.SINGLE_THREAD_BELOW` can be set from numbers. Run it
twice: on a quiet machine, and with the cores busy (``--busy`` starts one spinning process per
core for the duration).

    python benchmarks/threads.py [--busy] [--repeats 5]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os

import torch

from common import median_time, write


def _spin(stop):
    x = 0.0
    while not stop.is_set():
        x = x * 0.5 + 1.0


def measure(repeats: int) -> list[dict]:
    rows = []
    cores = os.cpu_count() or 1
    for op, sizes in (("eigh", (100, 200, 300, 500, 1000)), ("cholesky", (200, 500, 1000, 2000, 4000))):
        for n in sizes:
            a = torch.randn(n, n, dtype=torch.float64)
            a = a @ a.T / n + torch.eye(n, dtype=torch.float64)
            fn = (lambda a=a: torch.linalg.eigh(a)) if op == "eigh" else (lambda a=a: torch.linalg.cholesky(a))
            times = {}
            for threads in (1, cores):
                torch.set_num_threads(threads)
                times[threads] = median_time(fn, repeats)
            torch.set_num_threads(cores)
            rows.append({"op": op, "n": n, "seconds_1_thread": times[1], f"seconds_{cores}_threads": times[cores],
                         "speedup_of_all_threads": times[1] / times[cores]})
            print(f"{op:9s} n={n:5d}: 1 thread {times[1] * 1000:8.2f} ms, {cores} threads {times[cores] * 1000:8.2f} ms")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", action="store_true", help="keep every core busy with another process while measuring")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workers, stop = [], multiprocessing.Event()
    if args.busy:
        workers = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
        for w in workers:
            w.start()
    try:
        rows = measure(args.repeats)
    finally:
        stop.set()
        for w in workers:
            w.join()
    write(f"threads_{'busy' if args.busy else 'quiet'}_cpu", {"busy": args.busy, "rows": rows})


if __name__ == "__main__":
    main()
