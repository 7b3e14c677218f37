"""Inference cost per image against image size: RAM's stays flat, the CNN's and FC's grow with the image.

Part of ``attention bench`` (attention/bench.py): the cost of one unroll (or forward pass) per image at
batch 128 and 1, from 60x60 to 1000x1000, on random images.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from attention.bench import timed
from attention.config import Config, with_overrides

SCALING_SIZES = (60, 100, 200, 400, 800, 1000)
SCALING_MODELS = {
    "RAM (6 glimpses 12x12, 3 scales)": {
        "model.num_glimpses": 6,
        "model.reader.patch_size": 12,
        "model.reader.num_scales": 3,
    },
    "soft attention (6 glimpses N=12)": {
        "model.num_glimpses": 6,
        "model.reader.name": "filterbank",
        "model.reader.grid_size": 12,
        "model.where.policy": "deterministic",
    },
    "CNN (8 10x10 filters stride 5, 256)": {"model.name": "cnn"},
    "FC (256, 256)": {"model.name": "fc"},
}


def measure_scaling(
    sizes: tuple[int, ...],
    *,
    rounds: int,
    warmup: int,
    repeats: int,
    device: torch.device,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every model of :data:`SCALING_MODELS` at every size, batch 128 and 1, pooled over ``rounds``
    interleaved rounds (as the training cases are). Large batches of large images get fewer repeats."""
    points = [
        (name, overrides, size, batch)
        for name, overrides in SCALING_MODELS.items()
        for size in sizes
        for batch in (128, 1)
    ]
    scaling_rounds: list[list[dict[str, Any]]] = [[] for _ in points]
    for round_ in range(rounds):
        for rows, (name, overrides, size, batch) in zip(scaling_rounds, points, strict=True):
            progress(f"round {round_ + 1}/{rounds} inference: {name}, {size}x{size}, batch {batch}")
            rows.append(
                inference_cost(
                    name,
                    overrides,
                    size,
                    batch=batch,
                    warmup=warmup,
                    repeats=max(3, repeats // (4 if batch == 128 and size >= 800 else 1)),
                    device=device,
                )
            )
    return [pool_cost_rounds(rows) for rows in scaling_rounds]


def inference_cost(
    name: str,
    overrides: dict[str, Any],
    size: int,
    *,
    batch: int,
    warmup: int,
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    from attention.model import build_model

    config = with_overrides(Config(), overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config.model, image_size=(size, size)).to(device).eval()
    images = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def forward():
        model.unroll(images, sample=False, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return _cost_row(
        {"model": name, "image_size": size, "batch": batch}, timed(forward, warmup=warmup, repeats=repeats)
    )


def _cost_row(key: dict[str, Any], times: list[float]) -> dict[str, Any]:
    per_image = sorted(1000 * t / key["batch"] for t in times)
    return {
        **key,
        "ms_per_image": statistics.median(per_image),
        "min": per_image[0],
        "max": per_image[-1],
        "seconds": times,
    }


def pool_cost_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    key = {k: rows[0][k] for k in ("model", "image_size", "batch")}
    return {**_cost_row(key, [t for row in rows for t in row["seconds"]]), "rounds": len(rows)}


def format_scaling(rows: list[dict[str, Any]]) -> list[str]:
    """The cost table (ms per image, a column per image size) and where the CNN overtakes RAM."""
    lines = ["Inference cost per image (ms) against image size", ""]
    sizes = sorted({r["image_size"] for r in rows})
    lines.append(f"  {'model':<40} {'batch':>5} " + " ".join(f"{s:>9}" for s in sizes))
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch in (128, 1):
            cells = {
                r["image_size"]: r["ms_per_image"]
                for r in rows
                if r["model"] == model and r["batch"] == batch
            }
            lines.append(f"  {model:<40} {batch:>5} " + " ".join(f"{cells[s]:>9.4f}" for s in sizes))
    return [*lines, "", *crossovers({"scaling": rows})]


def crossovers(result: dict[str, Any], reference: str = "RAM", other: str = "CNN") -> list[str]:
    """Where the CNN's cost per image overtakes RAM's, per batch size."""
    notes = []
    for batch in (128, 1):
        ram = {
            r["image_size"]: r["ms_per_image"]
            for r in result["scaling"]
            if r["model"].startswith(reference) and r["batch"] == batch
        }
        cnn = {
            r["image_size"]: r["ms_per_image"]
            for r in result["scaling"]
            if r["model"].startswith(other) and r["batch"] == batch
        }
        sizes = sorted(set(ram) & set(cnn))
        above = [s for s in sizes if cnn[s] > ram[s]]
        if not sizes:
            continue
        if not above:
            notes.append(f"batch {batch}: the CNN stays cheaper than RAM up to {sizes[-1]}x{sizes[-1]}")
        elif above[0] == sizes[0]:
            notes.append(
                f"batch {batch}: RAM is cheaper than the CNN from the smallest size, {sizes[0]}x{sizes[0]}"
            )
        else:
            below = max(s for s in sizes if s < above[0])
            notes.append(
                f"batch {batch}: the CNN becomes dearer than RAM between {below} and {above[0]} pixels"
            )
        growth = ram[sizes[-1]] / ram[sizes[0]]
        notes.append(
            f"batch {batch}: RAM's cost per image at {sizes[-1]} is {growth:.2f}x its cost at {sizes[0]}"
        )
    return notes


def save_scaling_figure(result: dict[str, Any], out) -> None:
    from attention.report.figures import plot_scaling, save_figure

    save_figure(lambda ax: plot_scaling(ax, result["scaling"]), out, size=(9.5, 4.5))
