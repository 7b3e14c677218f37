"""How to split a CPU's cores between training processes: the measurement behind the default worker layout
of ``study run`` and ``search`` (one single-thread worker per core; attention/launch.py: default_workers).

Each layout (P processes x T threads, P x T = the cores) trains the same model in P processes at once for
the same wall-clock window; its figure is the images per second summed over the processes.
"""

from __future__ import annotations

from typing import Any

from attention.bench_together import train_together
from attention.cpu import usable_cores

WINDOW_S = 20.0
WARMUP_STEPS = 5


def _prepare(threads: int, overrides: dict[str, Any]) -> tuple[Any, int]:
    """One process of a layout: its threads, and the bench case's training step (bench_together)."""
    import torch

    from attention.bench import synthetic_training_step
    from attention.config import Config, with_overrides

    torch.set_num_threads(threads)
    batch = with_overrides(Config(), overrides).train.batch_size
    _, step = synthetic_training_step(overrides, batch=batch, device=torch.device("cpu"))
    return step, batch


def measure_layouts(overrides: dict[str, Any], *, window_s: float = WINDOW_S) -> list[dict[str, Any]]:
    """Images/s summed over the processes for every way to split the cores into P processes x T threads."""
    total = usable_cores()
    layouts = [(p, total // p) for p in range(1, total + 1) if total % p == 0]
    rows = []
    for processes, threads in layouts:
        jobs = [(threads, overrides)] * processes
        rates = train_together(_prepare, jobs, warmup_steps=WARMUP_STEPS, window_s=window_s)
        rows.append(
            {
                "processes": processes,
                "threads_each": threads,
                "images_per_s": sum(rates),
                "per_process": rates,
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
