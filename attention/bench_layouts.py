"""How to split a CPU's cores between training processes: the measurement behind the default worker layout
of ``study run`` and ``search`` (one single-thread worker per core; attention/engine.py).

Each layout (P processes x T threads, P x T = the cores) trains the same model in P processes at once for
the same wall-clock window; its figure is the images per second summed over the processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

WINDOW_S = 20.0
WARMUP_STEPS = 5


def _train_until(args: tuple[int, dict[str, Any], float, float]) -> int:
    """Worker: warm up, then train from ``start`` until ``stop`` (wall clock); returns images trained."""
    import torch

    from attention.bench import synthetic_training_step
    from attention.config import Config, with_overrides

    threads, overrides, start, stop = args
    torch.set_num_threads(threads)
    batch = with_overrides(Config(), overrides).train.batch_size
    _, step = synthetic_training_step(overrides, batch=batch, device=torch.device("cpu"))
    for _ in range(WARMUP_STEPS):
        step()
    while time.time() < start:
        time.sleep(0.01)
    trained = 0
    while time.time() < stop:
        step()
        trained += batch
    return trained


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measure_layouts(overrides: dict[str, Any], *, window_s: float = WINDOW_S) -> list[dict[str, Any]]:
    """Images/s summed over the processes for every way to split the cores into P processes x T threads."""
    total = cores()
    layouts = [(p, total // p) for p in range(1, total + 1) if total % p == 0]
    context = multiprocessing.get_context("spawn")
    rows = []
    for processes, threads in layouts:
        # every process starts the clock together, after its own start-up and warm-up
        start = time.time() + 30.0 + 5.0 * processes
        stop = start + window_s
        with context.Pool(processes) as pool:
            trained = pool.map(_train_until, [(threads, overrides, start, stop)] * processes)
        rows.append(
            {
                "processes": processes,
                "threads_each": threads,
                "images_per_s": sum(trained) / window_s,
                "per_process": [n / window_s for n in trained],
            }
        )
    return rows


def format_layouts(rows: list[dict[str, Any]]) -> list[str]:
    best = max(rows, key=lambda r: r["images_per_s"])
    lines = ["Worker layouts (training images/s summed over the processes)", ""]
    for row in rows:
        mark = "   <- fastest" if row is best else ""
        layout = f"{row['processes']} process(es) x {row['threads_each']} thread(s)"
        lines.append(f"  {layout:<32} {row['images_per_s']:>10.0f}{mark}")
    return lines
