"""``attention bench --population K``: training images/s summed over the trials, K trials as one population
against the same trials trained alone (the measurement behind ``attention search --population``).

Each layout runs P processes with T threads each, every process training a population of K trials (K = 1:
the ordinary model, optimizer and loss that ``fit`` runs) on synthetic batches of 128 for the same
wall-clock window, started together after their own start-up and warm-up. Its figure is the images per
second summed over every trial of every process, averaged over rounds that measure every layout once.
The trials alone are measured as P one-thread processes side by side, each training one trial for the
window: every trial costs the same, so this is the rate at which 8 separate trials run two at a time on
two cores go through their images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from attention.bench_together import train_together

WINDOW_S = 10.0
ROUNDS = 2
WARMUP_STEPS = 3
BATCH = 128
SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # population sizes of the one-process sweep on a GPU


@dataclass(frozen=True)
class Layout:
    label: str
    processes: int
    threads: int
    population: int  # 1: the ordinary path, as fit trains one trial


def cpu_layouts(size: int, cores: int) -> list[Layout]:
    """The trials alone (one one-thread process per core), one population of ``size`` on every core, and
    one population per core splitting the trials."""
    layouts = [
        Layout(f"{size} trials alone, {cores} at a time (1 thread each)", cores, 1, 1),
        Layout(f"population of {size}, {cores} threads", 1, cores, size),
    ]
    if cores > 1 and size % cores == 0 and size // cores > 1:
        share = size // cores
        layouts.append(Layout(f"{cores} populations of {share}, 1 thread each", cores, 1, share))
    return layouts


def gpu_layouts(size: int) -> list[Layout]:
    """One trial alone, two alone side by side on the GPU, and populations of ``size`` and 64."""
    sizes = sorted({size, 64})
    return [
        Layout("1 trial alone", 1, 1, 1),
        Layout("2 trials alone, side by side", 2, 1, 1),
        *[Layout(f"population of {k}", 1, 1, k) for k in sizes],
    ]


def _trial_overrides(overrides: dict[str, Any], k: int) -> dict[str, Any]:
    """Trial k as a search draws it: its own seed, learning rate and std."""
    return {
        **overrides,
        "train.seed": k,
        "train.learning_rate": 1e-4 * 1.5**k,
        "model.where.std": 0.05 + 0.02 * k,
    }


def _stepper(population: int, overrides: dict[str, Any], device: Any):
    """A training step of ``population`` trials on synthetic batches: K = 1 the bench's ordinary step with
    fit's gradient-norm check, else a population with fit_population's per-step work."""
    import torch

    from attention.bench import synthetic_training_step
    from attention.build import make_model, resolve_config
    from attention.config import Config, with_overrides
    from attention.population import PopulationRAM, hybrid_per_trial
    from attention.population_adam import PopulationAdam

    if population == 1:
        _, step = synthetic_training_step(
            _trial_overrides(overrides, 0), batch=BATCH, device=device, check_gradient_norm=True
        )
        return step

    configs = [
        resolve_config(with_overrides(Config(), _trial_overrides(overrides, k))) for k in range(population)
    ]
    size = configs[0].data.canvas_size
    k = population
    images = torch.rand(k, BATCH, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.randint(10, (k, BATCH), generator=torch.Generator().manual_seed(1)).to(device)
    generators = [torch.Generator(device=device).manual_seed(2 + i) for i in range(k)]
    stacked = PopulationRAM.from_models([make_model(config, device) for config in configs])
    adam = PopulationAdam(stacked, learning_rates=[c.train.learning_rate for c in configs])
    active = [True] * k

    def step() -> None:
        terms = hybrid_per_trial(
            stacked.unroll(images, sample=True, generators=generators),
            labels,
            reinforce_weight=1.0,
            baseline_weight=1.0,
        )
        torch.isfinite(terms.total).tolist()  # fit_population's per-step divergence check
        adam.zero_grad()
        terms.total.sum().backward()
        grad = stacked.flat_grad()
        torch.isfinite(grad.pow(2).sum(dim=1)).tolist()
        adam.step(grad, active)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def _prepare(layout: Layout, overrides: dict[str, Any], device_name: str) -> tuple[Any, int]:
    """One process of a layout: its threads, and a step that trains its K trials (bench_together)."""
    import torch

    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(layout.threads)
    return _stepper(layout.population, overrides, device), layout.population * BATCH


def paired_on_one_thread(overrides: dict[str, Any], *, size: int = 8, repeats: int = 10) -> dict[str, Any]:
    """In this process on one thread: one step of a population of ``size`` against ``size`` steps of
    single trials, timed alternately ``repeats`` times. A slow spell of a shared machine falls on both of
    a pair, so the median ratio says what stacking itself gains per core, whatever the load."""
    import statistics

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device = torch.device("cpu")
        together, alone = _stepper(size, overrides, device), _stepper(1, overrides, device)
        for _ in range(WARMUP_STEPS):
            together()
            alone()
        pairs = []
        for _ in range(repeats):
            started = time.perf_counter()
            together()
            middle = time.perf_counter()
            for _ in range(size):  # the same trial's steps cost what each of the size trials' would
                alone()
            pairs.append((middle - started, time.perf_counter() - middle))
    finally:
        torch.set_num_threads(threads)
    images = size * BATCH
    return {
        "size": size,
        "repeats": repeats,
        "population_images_per_s": statistics.median(images / a for a, _ in pairs),
        "alone_images_per_s": statistics.median(images / b for _, b in pairs),
        "speed_up_median": statistics.median(b / a for a, b in pairs),
        "seconds": pairs,
    }


def measure_population(
    overrides: dict[str, Any],
    *,
    size: int = 8,
    device: str = "cpu",
    cores: int | None = None,
    window_s: float = WINDOW_S,
    rounds: int = ROUNDS,
    progress=print,
) -> list[dict[str, Any]]:
    """Images/s summed over the trials for each layout (:func:`cpu_layouts` or :func:`gpu_layouts`),
    pooled over ``rounds`` rounds that measure every layout once, in an order that rotates from round to
    round, so that a slow spell of a shared machine does not fall on one layout only."""
    from attention.cpu import usable_cores

    cores = cores or usable_cores()
    layouts = gpu_layouts(size) if device.startswith("cuda") else cpu_layouts(size, cores)
    rates: dict[str, list[list[float]]] = {layout.label: [] for layout in layouts}
    for round_ in range(rounds):
        shift = round_ % len(layouts)
        for layout in layouts[shift:] + layouts[:shift]:
            progress(f"population bench, round {round_ + 1}/{rounds}: {layout.label}")
            jobs = [(layout, overrides, device)] * layout.processes
            rates[layout.label].append(
                train_together(_prepare, jobs, warmup_steps=WARMUP_STEPS, window_s=window_s)
            )
    rows = []
    for layout in layouts:
        per_round = [sum(per_process) for per_process in rates[layout.label]]
        rows.append(
            {
                "layout": layout.label,
                "processes": layout.processes,
                "threads_each": layout.threads,
                "population": layout.population,
                "images_per_s": sum(per_round) / rounds,
                "per_round": per_round,
                "per_process": rates[layout.label],
                "window_s": window_s,
            }
        )
    return rows


def saturation(
    overrides: dict[str, Any],
    *,
    device: str,
    sizes: tuple[int, ...] = SWEEP,
    seconds: float = 3.0,
    progress=print,
) -> list[dict[str, Any]]:
    """Images/s summed over the trials for a population of each of ``sizes``, one after another in this
    process (size 1: one trial alone, the ordinary step): where the figure stops growing, the device is
    full and a bigger population no longer pays. Each size is timed for at least ``seconds`` and 3 steps
    after its warm-up."""
    import torch

    rows = []
    for size in sizes:
        progress(f"population bench, sweep: population of {size}")
        try:
            step = _stepper(size, overrides, torch.device(device))
            for _ in range(WARMUP_STEPS):
                step()
            steps, started = 0, time.perf_counter()
            while steps < 3 or time.perf_counter() - started < seconds:
                step()
                steps += 1
        except torch.cuda.OutOfMemoryError:  # the device's memory, not its speed, ends the sweep
            rows.append({"population": size, "images_per_s": None, "step_ms": None, "out_of_memory": True})
            break
        finally:
            step = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        elapsed = time.perf_counter() - started
        images_per_s = size * BATCH * steps / elapsed
        rows.append({"population": size, "images_per_s": images_per_s, "step_ms": 1e3 * elapsed / steps})
    return rows


def format_saturation(rows: list[dict[str, Any]]) -> list[str]:
    alone = (rows[0]["images_per_s"] if rows and rows[0]["population"] == 1 else None) or float("nan")
    lines = ["", "One process, populations of growing size (training images/s summed over the trials)", ""]
    for row in rows:
        label = "1 trial alone" if row["population"] == 1 else f"population of {row['population']}"
        if row.get("out_of_memory"):
            lines.append(f"  {label:<24} out of the device's memory")
            continue
        lines.append(
            f"  {label:<24} {row['images_per_s']:>10.0f}   {row['images_per_s'] / alone:6.2f}x   "
            f"step {row['step_ms']:.1f} ms"
        )
    return lines


def format_paired(paired: dict[str, Any]) -> list[str]:
    return [
        "",
        f"One thread, alternating one step of a population of {paired['size']} with {paired['size']} steps "
        f"alone ({paired['repeats']} pairs): population {paired['population_images_per_s']:.0f}, alone "
        f"{paired['alone_images_per_s']:.0f} images/s; median speed-up {paired['speed_up_median']:.2f}x",
    ]


def format_population(rows: list[dict[str, Any]]) -> list[str]:
    reference = rows[0]["images_per_s"]
    lines = [f"Population against trials alone (training images/s summed over the trials, batch {BATCH})", ""]
    for row in rows:
        ratio = row["images_per_s"] / reference if reference else float("nan")
        rounds = ", ".join(f"{rate:.0f}" for rate in row.get("per_round", []))
        lines.append(f"  {row['layout']:<48} {row['images_per_s']:>10.0f}   {ratio:.2f}x   rounds: {rounds}")
    return lines
