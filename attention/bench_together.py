"""Processes that train side by side for the same wall-clock window: the clock of the layout and population
benches (``attention bench --layouts``, ``attention bench --population``).

Every process builds its model and warms it up, then waits at a barrier until all of them have, and only
then trains for the window. Start-up time (spawning, importing torch, a CUDA context, a compiled kernel)
differs between layouts and machines, so a fixed start time would either waste the wait or, on a slow
start, cut a process's window short while its images are still divided by the full window.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# a process still not ready after this long breaks the barrier, and the measurement fails instead of waiting
BARRIER_TIMEOUT_S = 600.0

# (step, images per step): what a prepare function returns for one process
Prepared = tuple[Callable[[], None], int]

_barrier: Any = None


def _remember(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def _train_window(job: tuple[Callable[..., Prepared], tuple, int, float]) -> float:
    """Worker: prepare, warm up, wait for the others, then train for the window; returns images/s, over
    the time its steps took (the last step ends a little after the window closes)."""
    prepare, args, warmup_steps, window_s = job
    try:
        step, images_per_step = prepare(*args)
        for _ in range(warmup_steps):
            step()
    except BaseException:
        _barrier.abort()  # the others stop waiting at once and fail too; this error is the one reported
        raise
    _barrier.wait(timeout=BARRIER_TIMEOUT_S)
    started = time.perf_counter()
    trained = 0
    while time.perf_counter() - started < window_s:
        step()
        trained += images_per_step
    return trained / (time.perf_counter() - started)


def train_together(
    prepare: Callable[..., Prepared], jobs: list[tuple], *, warmup_steps: int, window_s: float
) -> list[float]:
    """Training images/s of each of ``len(jobs)`` fresh processes in the same ``window_s``: process i runs
    ``prepare(*jobs[i])`` (a module-level function, so that it reaches a spawned process) for its step.
    Each process takes one job: one waiting at the barrier cannot take another. A process that dies (killed
    for memory, a crash in a kernel) fails the call (``BrokenProcessPool``) instead of hanging it."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    with ProcessPoolExecutor(
        len(jobs), mp_context=context, initializer=_remember, initargs=(barrier,)
    ) as pool:
        return list(pool.map(_train_window, [(prepare, args, warmup_steps, window_s) for args in jobs]))
