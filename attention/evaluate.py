"""Evaluation of a finished run from its config and weights: whatever its task measures (test error with
mean and sampled locations, or catch rate with greedy and sampled policies; see attention/tasks).

The image tasks' evaluation functions live in :mod:`attention.tasks.classify` and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attention.build import make_model, pick_device, resolve_config
from attention.config import Config
from attention.runs import WEIGHTS, load_run_config, load_weights_into, safe_load
from attention.tasks import TASKS
from attention.tasks.classify import SAMPLING_SEED_OFFSET, error_pct, evaluate_model

__all__ = ["SAMPLING_SEED_OFFSET", "error_pct", "evaluate_model", "evaluate_run", "load_trained"]


def load_trained(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """The run's model with its saved (best validation) weights, loaded weights-only."""
    run_dir = Path(run_dir)
    config = resolve_config(load_run_config(run_dir))
    model = make_model(config, device)
    weights = run_dir / WEIGHTS
    load_weights_into(
        model,
        safe_load(weights, map_location=device),
        weights,
        what="were they written by another version of the model? Train the run again with this one",
    )
    model.eval()
    return model, config


def evaluate_run(
    run_dir: str | Path,
    *,
    test_seed: int | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Re-derive a run's test numbers from its config and weights (optionally on another test seed)."""
    device_ = pick_device(device)
    model, config = load_trained(run_dir, device_)
    task = TASKS.get(config.data.task)(config, data_dir=data_dir, device=device_)
    return task.evaluate(model, test_seed=test_seed)
