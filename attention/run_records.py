"""What a run carries from epoch to epoch and what it leaves: the loop's state (model selection, the plateau
schedule, the stopping rules), the weights it starts from, its ``checkpoint.pt`` and its ``result.json``.
``fit`` (attention/train.py) and a population's trials (attention/population_train.py) both read and write
them here, so either can resume a run the other stopped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from attention import AttentionError
from attention.config import Config
from attention.linear import kernel_report
from attention.runs import atomic_torch_save, load_weights_into, safe_load, weights_file


def new_state() -> dict[str, Any]:
    """What a run carries from epoch to epoch besides weights, optimizer and random streams."""
    return {
        "epoch": 0,
        "train_seconds": 0.0,
        "best_error": math.inf,
        "best_epoch": 0,
        "stale_epochs": 0,
        "plateau_factor": 1.0,
        "plateau_stale": 0,
        "stopped": None,
    }


def record_validation(state: dict[str, Any], val_error: float, config: Config) -> bool:
    """Update model selection, the plateau schedule and the stopping rules after an epoch; ``state`` must
    already count that epoch (``epoch`` incremented, its seconds in ``train_seconds``). Returns whether
    this epoch is the best so far."""
    t = config.train
    improved = val_error < state["best_error"]
    if improved:
        state.update(best_error=val_error, best_epoch=state["epoch"], stale_epochs=0, plateau_stale=0)
    else:
        state["stale_epochs"] += 1
        state["plateau_stale"] += 1
        if t.schedule == "plateau" and state["plateau_stale"] >= t.plateau_patience:
            state["plateau_factor"] *= t.step_gamma
            state["plateau_stale"] = 0
    if t.early_stopping_patience is not None and state["stale_epochs"] >= t.early_stopping_patience:
        state["stopped"] = "early_stopping"
    elif t.time_budget_s is not None and state["train_seconds"] >= t.time_budget_s:
        state["stopped"] = "time_budget"
    return improved


def load_initial_weights(model: torch.nn.Module, source: str | Path, device: torch.device) -> str:
    """Load ``train.init_from`` (a run directory or a weights file) into ``model``; returns the file's
    sha256, so the result records exactly which weights the run started from."""
    path = weights_file(source)
    payload = path.read_bytes()
    state = safe_load(path, map_location=device)
    load_weights_into(
        model,
        state,
        path,
        what="train.init_from: the reader output, glimpse network, core and heads must have the same sizes",
    )
    return hashlib.sha256(payload).hexdigest()


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def result_record(
    *,
    config: Config,
    model: torch.nn.Module,
    state: dict[str, Any],
    evaluation: dict[str, Any],
    selection: dict[str, Any],
    epochs_budget: int,
    identity: str,
    revision: str | None,
    init_digest: str | None,
    device: torch.device,
) -> dict[str, Any]:
    """A finished run's ``result.json`` (``fit``'s and a population trial's): its evaluation, its best
    validation number (``selection``, the task's) and how it was trained."""
    t = config.train
    return {
        **evaluation,
        "config_hash": identity,
        "seed": t.seed,
        "model": config.model.name,
        "epochs_run": state["epoch"],
        "epochs_budget": epochs_budget,
        "time_budget_s": t.time_budget_s,
        "stopped_because": state["stopped"] or "epochs",
        "best_epoch": state["best_epoch"],
        **selection,
        "train_seconds": state["train_seconds"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "torch_version": torch.__version__,
        "git_revision": revision,
        "init_from_sha256": init_digest,
        "kernel": kernel_report(),  # which linear kernel ran, chosen by measurement on this CPU
    }


class Checkpoint:
    """Everything a run carries from epoch to epoch, saved and restored in one place: the weights, the
    optimizer, the best weights so far, the policies' sampling stream, the task's own streams (training data
    order or running games), the loop's ``state`` (:func:`new_state`) and the device type the streams
    belong to. New state is added here and nowhere else."""

    def __init__(
        self,
        path: Path,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        task: Any,
        sample_generator: torch.Generator,
        device: torch.device,
    ):
        self.path = path
        self.model = model
        self.optimizer = optimizer
        self.task = task
        self.sample_generator = sample_generator
        self.device = device
        self.state = new_state()
        self.best_weights = weights_copy(model)

    def save(self) -> None:
        """Write ``checkpoint.pt``: ``fit`` and a population's trials (attention/population_train.py) both
        write it here, so either can resume a run the other stopped."""
        atomic_torch_save(
            self.path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best_model": self.best_weights,
                **self.task.state_dict(),  # the task's random streams, at the top level
                "sample_generator": self.sample_generator.get_state(),
                "state": self.state,
                "device_type": self.device.type,
            },
        )

    def restore(self) -> None:
        """Load ``checkpoint.pt`` weights-only; refused on another kind of device than the one that wrote
        it (its random streams belong to that device)."""
        saved = safe_load(self.path, map_location=self.device)
        stale = "it does not belong to this run: delete it to train the run from the start"
        if not isinstance(saved, dict):
            raise AttentionError(f"{self.path} cannot be resumed (not a checkpoint); {stale}")
        if saved.get("device_type", "cpu") != self.device.type:
            raise AttentionError(
                f"{self.path} was written on {saved.get('device_type')}; resume it with "
                f"--device {saved.get('device_type')} (its random streams belong to that device)"
            )
        try:
            load_weights_into(self.model, saved["model"], self.path, what=stale)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.best_weights = saved["best_model"]
            shapes = {name: tuple(value.shape) for name, value in self.model.state_dict().items()}
            if {name: tuple(value.shape) for name, value in self.best_weights.items()} != shapes:
                raise ValueError("its best weights have other names or shapes than the model's")
            self.task.load_state_dict(saved)
            self.sample_generator.set_state(saved["sample_generator"])
            self.state.update(saved["state"])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as error:
            named = f"no '{error.args[0]}'" if isinstance(error, KeyError) else str(error).splitlines()[0]
            raise AttentionError(f"{self.path} cannot be resumed ({named}); {stale}") from None
