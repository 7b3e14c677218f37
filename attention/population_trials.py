"""One trial of a population: which configs may train together, and ``fit``'s prologue and epilogue for it.

A trial opens and finishes through ``fit``'s own ``open_run`` and ``finish_run`` (attention/train.py): its
finished result, or its model, optimizer, generators, data stream and, to resume, its checkpoint; then
model.pt, the test evaluation and result.json. Its Adam state converts both ways between the population's
stacked form and ``torch.optim.Adam``'s, so checkpoints keep ``fit``'s format.
attention/population_train.py trains the trials together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attention import AttentionError
from attention.config import Config, flatten, to_dict
from attention.data.mnist import Mnist
from attention.data.tasks import TrainingStream
from attention.run_records import Checkpoint
from attention.tasks import TASKS
from attention.tasks.classify import ClassifyTask
from attention.train import OpenRun, finish_run, open_run

PER_TRIAL = ("train.learning_rate", "model.where.std", "train.seed", "train.init_from")
"""The config fields in which the trials of one population may differ; every other field decides the
shape of the computation (or the data, the schedule, the evaluation) and must be the same."""


def shared_fields(config: Config) -> dict[str, Any]:
    """The fields a population's trials must share: every field but :data:`PER_TRIAL`."""
    return {key: value for key, value in flatten(to_dict(config)).items() if key not in PER_TRIAL}


def population_mismatch(a: Config, b: Config) -> str | None:
    """Why ``a`` and ``b`` cannot train in one population (the first differing field), or None."""
    left, right = shared_fields(a), shared_fields(b)
    for key in left:
        if left[key] != right[key]:
            return f"{key} is {left[key]!r} in one trial and {right[key]!r} in another"
    return None


def population_refusal(config: Config) -> str | None:
    """Why ``config`` cannot train in a population at all (a worker trains such a run alone), or None."""
    if TASKS.get(config.data.task) is not ClassifyTask:
        return f"a population trains the image classification tasks, not '{config.data.task}'"
    if config.model.name != "ram":
        return f"a population trains RAM models (model.name 'ram'), not '{config.model.name}'"
    if config.train.optimizer != "adam":
        return f"a population trains with Adam; train.optimizer is '{config.train.optimizer}'"
    if config.train.compile:
        return "a population runs eagerly: set train.compile=false"
    if config.train.time_budget_s is not None:
        # each trial would be charged the wall time of the shared epochs, so a trial stacked with others
        # would stop after fewer epochs than alone (on a CPU about 1/K of them)
        return "a population trains no run with a wall-clock budget: set train.time_budget_s=none"
    return None


def check_population(configs: Sequence[Config]) -> None:
    """Refuse, in one line, configs that cannot train as one population."""
    if not configs:
        raise AttentionError("a population needs at least one trial")
    first = configs[0]
    refusal = population_refusal(first)
    if refusal:
        raise AttentionError(refusal)
    for config in configs[1:]:
        why = population_mismatch(first, config)
        if why:
            raise AttentionError(f"trials of one population may differ only in {', '.join(PER_TRIAL)}; {why}")


@dataclass
class Trial:
    """One trial of the population: the run ``fit`` would open for it (:class:`attention.train.OpenRun`),
    whose ``Checkpoint`` it writes every epoch in ``fit``'s format."""

    index: int
    run: OpenRun
    moments: dict[str, Any] | None = None  # Adam's state from a checkpoint, until it is in the population
    diverged: str | None = None

    @property
    def config(self) -> Config:
        return self.run.config

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def checkpoint(self) -> Checkpoint:
        return self.run.checkpoint

    @property
    def model(self) -> torch.nn.Module:
        return self.run.checkpoint.model

    @property
    def state(self) -> dict[str, Any]:
        return self.run.checkpoint.state

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.run.metrics

    @property
    def sample_generator(self) -> torch.Generator:
        return self.run.checkpoint.sample_generator

    @property
    def stream(self) -> TrainingStream:
        return self.run.checkpoint.task.stream


def open_trial(
    k: int,
    config: Config,
    run_dir: Path,
    mnist: Mnist,
    device: torch.device,
    *,
    revision: str | None,
    resume: bool,
    hold: contextlib.ExitStack,
    wait_if_busy: bool,
) -> Trial | dict[str, Any]:
    """``fit``'s prologue for one trial: its finished result, or its trial (its run directory then held in
    ``hold``). Another process training it is waited for with ``wait_if_busy``, else refused
    (:class:`attention.runs.RunBusy`)."""
    task = ClassifyTask(config, data_dir=None, device=device, mnist=mnist)
    run = open_run(
        config, run_dir, task, device, revision=revision, resume=resume, wait=wait_if_busy, hold=hold
    )
    if isinstance(run, dict):
        return run
    trial = Trial(index=k, run=run)
    trial.moments = moments_of(trial)  # a resumed run's Adam state, None for a fresh one
    return trial


def set_torch_optimizer_state(trial: Trial, moments: dict[str, Any], lr: float) -> None:
    """Put the trial's Adam state into its ``torch.optim.Adam`` (fit's checkpoint holds that one's
    state_dict), with the learning rate of its last step as ``fit`` leaves it."""
    optimizer = trial.checkpoint.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    params = list(trial.model.parameters())
    for p, exp_avg, exp_avg_sq in zip(params, moments["exp_avg"], moments["exp_avg_sq"], strict=True):
        # fused Adam keeps its step count as a float32 tensor on the parameter's device
        step = torch.tensor(float(moments["step"]), dtype=torch.float32, device=p.device)
        optimizer.state[p] = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def moments_of(trial: Trial) -> dict[str, Any] | None:
    """The Adam state loaded from a checkpoint into the trial's torch optimizer, in the population's form."""
    params = list(trial.model.parameters())
    states = [trial.checkpoint.optimizer.state.get(p) for p in params]
    if not all(states):
        return None
    return {
        "step": int(states[0]["step"].item()),
        "exp_avg": [s["exp_avg"] for s in states],
        "exp_avg_sq": [s["exp_avg_sq"] for s in states],
    }


def finish_trial(trial: Trial, population_size: int) -> dict[str, Any]:
    """``fit``'s epilogue (:func:`attention.train.finish_run`), recording the population's size."""
    # trained in a population of this many trials at its last epoch: train_seconds is the wall time of the
    # shared epochs, not this trial's share of them
    return finish_run(trial.run, {"population_size": population_size})
