"""``attention bench``: training throughput, data-generation throughput and inference cost vs image size
(attention/bench_scaling.py).

Speed is measured here and nowhere else (no timed tests). Every figure is a median over repeated timed
repetitions after a warm-up, with min and max, on synthetic inputs of the right shape (data generation on
real MNIST when available).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attention.config import Config, with_overrides
from attention.linear import ONEDNN, PYTORCH, forced_kernel, kernel_report, onednn_available
from attention.losses import hybrid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingCase:
    name: str
    overrides: dict[str, Any]


COMPILED = {"train.compile": True}

TRAINING_CASES = (
    TrainingCase(
        "RAM mnist 28x28, 6 glimpses 8x8, 1 scale",
        {
            "data.task": "mnist",
            "model.num_glimpses": 6,
            "model.reader.patch_size": 8,
            "model.reader.num_scales": 1,
        },
    ),
    TrainingCase(
        "RAM translated 60x60, 6 glimpses 12x12, 3 scales",
        {
            "data.task": "translated",
            "data.canvas_size": 60,
            "model.num_glimpses": 6,
            "model.reader.patch_size": 12,
            "model.reader.num_scales": 3,
        },
    ),
    TrainingCase(
        "RAM cluttered 100x100, 8 glimpses 12x12, 4 scales",
        {
            "data.task": "cluttered",
            "data.canvas_size": 100,
            "model.num_glimpses": 8,
            "model.reader.patch_size": 12,
            "model.reader.num_scales": 4,
        },
    ),
    TrainingCase(
        "soft attention cluttered 100x100, 8 glimpses N=12",
        {
            "data.task": "cluttered",
            "data.canvas_size": 100,
            "model.num_glimpses": 8,
            "model.reader.name": "filterbank",
            "model.reader.grid_size": 12,
            "model.where.policy": "deterministic",
        },
    ),
)

# Environment variables recorded with every measurement: thread counts, the linear-layer kernel switch
# (attention/linear.py), and PyTorch's huge-page allocation
# (THP_MEM_ALLOC_ENABLE=1), which changes how often reads from a large image batch miss the TLB.
TIMING_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "ATTENTION_ONEDNN_LINEAR")


def timed(function: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _summary(times: list[float], items: int) -> dict[str, Any]:
    rates = sorted(items / t for t in times)
    return {"images_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "seconds": times}


def pool_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same measurement repeated in several rounds: every summary is recomputed over the
    timings of all rounds, so a burst of load on the machine during one round moves the median little."""
    batch = rows[0]["batch"]
    pooled = {**rows[0], **_summary([t for row in rows for t in row["seconds"]], batch), "rounds": len(rows)}
    for key in ("data_generation", "with_data_generation"):
        if key in rows[0]:
            pooled[key] = _summary([t for row in rows for t in row[key]["seconds"]], batch)
    if "kernels" in rows[0]:
        pooled["kernels"] = {
            name: _summary([t for row in rows for t in row["kernels"][name]["seconds"]], batch)
            for name in rows[0]["kernels"]
        }
    return pooled


def compiled_label(case: TrainingCase) -> str:
    """', compiled unroll' or ', compiled sensor': what ``train.compile`` compiles for this case."""
    from attention.build import compiled_part

    part = compiled_part(with_overrides(Config(), case.overrides))
    return f", compiled {part}" if part else ""


def training_throughput(
    case: TrainingCase,
    *,
    batch: int,
    warmup: int,
    repeats: int,
    mnist=None,
    device: torch.device,
    kernel: str | None = None,
) -> dict[str, Any]:
    """Images/s of one training step (and, with ``mnist``, of data generation and of both); ``kernel``
    forces the linear layers' kernel (attention/linear.py) instead of the one measured at first use."""
    with forced_kernel(kernel):
        return _training_throughput(
            case, batch=batch, warmup=warmup, repeats=repeats, mnist=mnist, device=device
        )


def synthetic_training_step(
    overrides: dict[str, Any], *, batch: int, device: torch.device, check_gradient_norm: bool = False
) -> tuple[Config, Callable[..., None]]:
    """The bench's training step: the model of ``overrides`` trained on one fixed random batch (what a
    training step runs, compiled or not; no data generation). ``step(images, labels)`` takes another batch.
    ``check_gradient_norm``: also fit's per-step checks of the loss and the gradient norm (its divergence
    check), as a search's trial alone runs them, to compare with a population's step."""
    from attention.build import make_model, training_unroll
    from attention.data.tasks import resolve
    from attention.train import make_optimizer

    config = with_overrides(Config(), overrides)
    config = with_overrides(config, {"data.canvas_size": resolve(config.data).canvas_size})
    size = config.data.canvas_size
    model = make_model(config, device)
    optimizer = make_optimizer(config, model)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.randint(10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    unroll = training_unroll(model, config)

    def step(images=images, labels=labels):
        rollout = unroll(images, generator)
        loss = hybrid(rollout, labels).total
        if check_gradient_norm:
            torch.isfinite(loss).item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if check_gradient_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return config, step


def _training_throughput(
    case: TrainingCase, *, batch: int, warmup: int, repeats: int, mnist, device: torch.device
) -> dict[str, Any]:
    from attention.data.tasks import TrainingStream, to_float

    config, step = synthetic_training_step(case.overrides, batch=batch, device=device)
    row = {
        "config": case.name + compiled_label(case),
        "overrides": case.overrides,
        "batch": batch,
        **_summary(timed(step, warmup=warmup, repeats=repeats), batch),
    }
    if mnist is not None:
        stream = TrainingStream(mnist, config.data, torch.Generator().manual_seed(0))
        batches = stream.epoch(batch)

        def data_only():
            return next(batches)

        row["data_generation"] = _summary(timed(data_only, warmup=warmup, repeats=repeats), batch)

        def step_with_data():
            raw, targets = next(batches)
            step(to_float(raw, device), targets.to(device))

        row["with_data_generation"] = _summary(timed(step_with_data, warmup=warmup, repeats=repeats), batch)
    return row


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """The machine and settings behind the timings. ``linear_kernel``: :func:`attention.linear.kernel_report`
    (the kernel chosen for the linear layers, why, and the CPU model, vector extensions and oneDNN's ISA)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "linear_kernel": kernel_report(),
        "gpu": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
        # other processes' load when the measurement ended (1, 5 and 15 minutes): on a shared machine it
        # moves every timing
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # settings that change the timings without changing the code
        "environment": {name: os.environ[name] for name in TIMING_ENVIRONMENT if name in os.environ},
    }


def run(
    *,
    quick: bool = False,
    compiled: bool = True,
    data_dir=None,
    device: torch.device | None = None,
    progress: Callable[[str], None] = log.info,
    rounds: int | None = None,
    cases: str | None = None,
    scaling: bool = True,
    kernels: bool = True,
) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks repetitions and sizes to a smoke test of the command (one round);
    ``compiled`` adds every training case with ``train.compile`` (the retina's sensor or the soft reader's
    whole unroll compiled); each figure pools the timings of ``rounds`` interleaved rounds (default 3, or 1
    with ``quick``). ``cases`` keeps only the
    training cases whose name contains it; ``scaling=False`` skips the inference cost against image size
    (both for a short lease of a GPU machine). With ``kernels``, on a CPU where oneDNN's operator exists,
    each eager training case's step is also timed with the linear layers forced onto each kernel, in the
    same rounds (``row["kernels"]``), beside the measured choice that training gets."""
    from attention import AttentionError
    from attention.bench_scaling import SCALING_SIZES, measure_scaling  # it imports this module's timed
    from attention.data.mnist import load_mnist

    device = device or torch.device("cpu")
    warmup, repeats = (1, 2) if quick else (5, 20)
    rounds = rounds if rounds is not None else (1 if quick else 3)
    if rounds < 1:
        raise AttentionError(f"bench needs at least one round, got {rounds}")
    try:
        mnist = load_mnist(data_dir)
    except AttentionError as error:
        progress(f"no MNIST ({error}); data generation is not measured")
        mnist = None
    chosen = [case for case in TRAINING_CASES if cases is None or cases in case.name]
    if not chosen:
        names = "; ".join(case.name for case in TRAINING_CASES)
        raise AttentionError(f"no training case matches '{cases}'; the cases are: {names}")
    measured = list(chosen)
    if compiled:
        measured += [TrainingCase(case.name, {**case.overrides, **COMPILED}) for case in chosen]
    # Every case is measured once per round and the rounds are interleaved, so that slow spells of a shared
    # machine fall on all cases alike instead of on whichever case was running at the time.
    side_by_side = kernels and device.type == "cpu" and onednn_available()
    training_rounds: list[list[dict[str, Any]]] = [[] for _ in measured]
    for round_ in range(rounds):
        for rows, case in zip(training_rounds, measured, strict=True):
            compiled_case = case.overrides.get("train.compile", False)
            # the measured choice (None) and, beside it, each kernel forced (training step only), in an order
            # that rotates from round to round: the first measurement of a process runs cold
            forced = [PYTORCH, ONEDNN] if side_by_side and not compiled_case else []
            order = [None, *forced]
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            measurements = {}
            for kernel in order:
                on = f", linear kernel {kernel}" if kernel else ""
                progress(f"round {round_ + 1}/{rounds} training: {case.name}{compiled_label(case)}{on}")
                measurements[kernel] = training_throughput(
                    case,
                    batch=128,
                    warmup=warmup + 3 * compiled_case,  # the first calls of a compiled case compile
                    repeats=repeats,
                    mnist=mnist if kernel is None else None,
                    device=device,
                    kernel=kernel,
                )
            row = measurements[None]
            if forced:
                row["kernels"] = {kernel: _summary(measurements[kernel]["seconds"], 128) for kernel in forced}
            rows.append(row)
    training = [pool_rounds(rows) for rows in training_rounds]
    sizes = (SCALING_SIZES[:2] if quick else SCALING_SIZES) if scaling else ()
    scaling_rows = measure_scaling(
        sizes, rounds=rounds, warmup=warmup, repeats=repeats, device=device, progress=progress
    )
    return {
        "machine": machine(device),
        "device": str(device),
        "warmup": warmup,
        "repeats": repeats,
        "rounds": rounds,
        "training": training,
        "scaling": scaling_rows,
    }


def describe_kernel(report: dict[str, Any]) -> list[str]:
    """Two lines on the linear layers' kernel and the CPU, from :func:`attention.linear.kernel_report`."""
    cpu = report["cpu"]
    generation = (
        f" ({cpu['vendor']} family {cpu['family']} model {cpu['model']})" if cpu.get("family") else ""
    )
    vector = " ".join(cpu["vector_extensions"] or []) or "unknown"
    if report["kernel"] is None:  # e.g. every product ran on a GPU, where PyTorch's CUDA kernels run them
        kernel_line = "Linear layers: no product ran on the CPU in this process (the kernel is chosen there)"
    else:
        kernel_line = f"Linear layers: {report['kernel']} kernel ({report['rule']}: {report['reason']})"
    return [
        kernel_line,
        f"CPU: {cpu['model_name']}{generation}, {cpu['logical_cpus']} logical CPUs, {report['threads']}"
        f" threads; PyTorch dispatch {cpu['torch_cpu_capability']}; oneDNN ISA {cpu['onednn_isa']};"
        f" vector: {vector}",
    ]


def format_table(result: dict[str, Any]) -> str:
    report = result.get("machine", {}).get("linear_kernel")
    lines = [*describe_kernel(report), ""] if report else []
    lines += ["Training throughput, batch 128 (images/s: median [min, max])", ""]
    for row in result["training"]:
        line = f"  {row['config']:<55} {row['images_per_s']:>8.0f} [{row['min']:.0f}, {row['max']:.0f}]"
        for kernel, forced in row.get("kernels", {}).items():
            line += f"   {kernel} {forced['images_per_s']:.0f} [{forced['min']:.0f}, {forced['max']:.0f}]"
        if "with_data_generation" in row:
            line += (
                f"   with data generation {row['with_data_generation']['images_per_s']:.0f}"
                f"   data alone {row['data_generation']['images_per_s']:.0f}"
            )
        lines.append(line)
    if not result["scaling"]:
        return "\n".join(lines) + "\n"
    from attention.bench_scaling import format_scaling  # it imports this module's timed

    return "\n".join([*lines, "", *format_scaling(result["scaling"])]) + "\n"
