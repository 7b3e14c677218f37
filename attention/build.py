"""From a configuration to a model on a device: config resolution, device choice, model building and
what ``train.compile`` compiles. Training, evaluation, the bench and the reports all build here, so none
of them imports another to get a model."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from attention import AttentionError
from attention.compiling import compiled_part, training_unroll
from attention.config import Config
from attention.model import build_model
from attention.tasks import TASKS

__all__ = [
    "compiled_part",
    "make_model",
    "pick_device",
    "replace_data",
    "resolve_config",
    "training_unroll",
    "use_deterministic_cuda",
]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "step", "plateau")


def resolve_config(config: Config) -> Config:
    """Fill derived defaults (the task's) and refuse impossible settings before anything is trained."""
    config = TASKS.get(config.data.task).resolve(config)
    t = config.train
    if t.optimizer not in OPTIMIZERS:
        raise AttentionError(f"unknown train.optimizer '{t.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
    if t.schedule not in SCHEDULES:
        raise AttentionError(f"unknown train.schedule '{t.schedule}'; use one of {', '.join(SCHEDULES)}")
    checks = [
        (t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.time_budget_s is None or t.time_budget_s > 0, "train.time_budget_s must be > 0 or none"),
        (t.grad_clip is None or t.grad_clip > 0, "train.grad_clip must be > 0 or none"),
        (
            t.early_stopping_patience is None or t.early_stopping_patience >= 1,
            "train.early_stopping_patience must be >= 1 or none",
        ),
        (0 <= t.min_lr_fraction <= 1, "train.min_lr_fraction must be in [0, 1]"),
        (
            t.step_epochs >= 1 and 0 < t.step_gamma <= 1,
            "train.step_epochs must be >= 1, step_gamma in (0, 1]",
        ),
        (t.eval_batch_size >= 1, "train.eval_batch_size must be >= 1"),
        (t.plateau_patience >= 1, "train.plateau_patience must be >= 1"),
        (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
        (
            t.reinforce_weight >= 0 and t.baseline_weight >= 0 and t.entropy_weight >= 0,
            "train.reinforce_weight, baseline_weight and entropy_weight must be >= 0",
        ),
        (config.eval.sampled_repeats >= 1, "eval.sampled_repeats must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise AttentionError(message)
    return config


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise AttentionError(f"unknown device '{device}': use cpu, cuda, cuda:N or auto") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise AttentionError(f"device '{device}' requested but CUDA is not available; use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise AttentionError(
                f"device '{device}' requested but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s): use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif chosen.type != "cpu":
        raise AttentionError(f"device '{device}' is not supported: use cpu, cuda, cuda:N or auto")
    if chosen.type == "cuda":
        use_deterministic_cuda()
    return chosen


# cuBLAS reads this when it starts: a fixed workspace makes its products add in the same order each time
CUBLAS_WORKSPACE = ":4096:8"


def use_deterministic_cuda() -> None:
    """Ask CUDA for kernels that give the same result each time: same seed and machine, same run. Left to
    itself cuDNN picks its convolution algorithms by timing them (the CNN baseline could train with another
    one in a rerun), some of its backward algorithms and cuBLAS's split reductions add in an order that
    varies, and so a seed's run would not repeat itself. An operation that has no deterministic CUDA kernel
    warns (``warn_only``) rather than stopping a run. Set for the whole process, as torch allows; the
    CPU's kernels are deterministic already, so a CPU run never calls this."""
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    # a debugging aid that fills every new uninitialised tensor (a pass over memory per torch.empty); our
    # code reads no uninitialised memory, so it would cost time and change nothing
    torch.utils.deterministic.fill_uninitialized_memory = False


def make_model(config: Config, device: torch.device) -> torch.nn.Module:
    """Build the model the task needs (its image size, its classes or game actions) with weights drawn from
    the run's seed, without touching the global RNG state. ``config`` must be resolved."""
    shape = TASKS.get(config.data.task).model_shape(config)
    # fork every device's RNG: manual_seed seeds them all, and the caller's streams must not change
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(config.train.seed)
        model = build_model(config.model, **shape)
    if compiled_part(config) == "sensor":
        model.reader.use_compiled_sensor()
    return model.to(device)


def replace_data(config: Config, **changes: Any) -> Config:
    """``config`` with some ``data`` fields changed (a task's resolved defaults)."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **changes))
