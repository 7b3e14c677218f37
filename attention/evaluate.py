"""Evaluation of a finished run from its config and weights: whatever its task measures (test error with
mean and sampled locations, or catch rate with greedy and sampled policies; see attention/tasks).

The image tasks' evaluation functions live in :mod:`attention.tasks.classify` and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attention import AttentionError
from attention.build import make_model, pick_device, resolve_config
from attention.config import Config
from attention.runs import RESULT, WEIGHTS, load_run_config, load_weights_into, read_json, safe_load
from attention.tasks import TASKS
from attention.tasks.classify import SAMPLING_SEED_OFFSET, error_pct, evaluate_model

__all__ = [
    "SAMPLING_SEED_OFFSET",
    "check_run",
    "error_pct",
    "evaluate_model",
    "evaluate_run",
    "load_trained",
    "recorded_differences",
]


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


def recorded_differences(evaluation: dict[str, Any], recorded: dict[str, Any]) -> dict[str, list[Any]]:
    """The numbers of a fresh ``evaluation`` that differ from those a run's ``result.json`` recorded:
    ``{key: [now, recorded]}`` over the evaluation's numeric fields (test errors, catch rates and their
    intervals, the number of test images). Its words (``protocol``) may be reworded between versions, so
    they are not compared."""
    differences = {}
    for key, value in evaluation.items():
        numeric = isinstance(value, int | float) or (
            isinstance(value, list) and all(isinstance(v, int | float) for v in value)
        )
        if numeric and not isinstance(value, bool) and key in recorded and recorded[key] != value:
            differences[key] = [value, recorded[key]]
    return differences


def check_run(
    run_dir: str | Path, *, data_dir: str | Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Re-derive a finished run's test numbers from its weights and compare them with its ``result.json``:
    ``state`` is ``same``, ``differs`` (with ``differences``, see :func:`recorded_differences`),
    ``unfinished`` (no result yet: nothing to compare), ``no weights`` (a run committed without its
    ``model.pt``, such as a sweep's) or ``error`` (with ``error``: the weights do not fit, say)."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULT).is_file():
        return {"run": str(run_dir), "state": "unfinished"}
    if not (run_dir / WEIGHTS).is_file():
        return {"run": str(run_dir), "state": "no weights"}
    recorded = read_json(run_dir / RESULT)
    try:
        evaluation = evaluate_run(run_dir, data_dir=data_dir, device=device)
    except AttentionError as error:
        return {"run": str(run_dir), "state": "error", "error": str(error)}
    differences = recorded_differences(evaluation, recorded)
    return {
        "run": str(run_dir),
        "state": "differs" if differences else "same",
        "differences": differences,
        "evaluation": evaluation,
        "trained_with": {
            **{key: recorded.get(key) for key in ("git_revision", "torch_version", "device")},
            # the CPU whose kernels rounded its evaluation: another CPU may move one test image
            "cpu": ((recorded.get("kernel") or {}).get("cpu") or {}).get("model_name"),
        },
    }
