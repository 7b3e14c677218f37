"""One trial of a population: which configs may train together, and ``fit``'s prologue and epilogue for it.

A trial opens as ``fit`` opens a run (its finished result, or its model, optimizer, generators, data stream
and, to resume, its checkpoint) and finishes as ``fit`` finishes one (model.pt, the test evaluation,
result.json). Its Adam state converts both ways between the population's stacked form and
``torch.optim.Adam``'s, so checkpoints keep ``fit``'s format. attention/population_train.py trains the
trials together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attention import AttentionError
from attention.build import make_model
from attention.config import Config, config_hash, flatten, to_dict
from attention.data.tasks import TrainingStream
from attention.evaluate import evaluate_model
from attention.run_records import (
    load_initial_weights,
    new_state,
    read_checkpoint,
    result_record,
    weights_copy,
)
from attention.runs import (
    CHECKPOINT,
    CONFIG,
    RESULT,
    WEIGHTS,
    atomic_torch_save,
    finished_result,
    git_revision,
    holding_run,
    read_metrics,
    write_json,
)
from attention.tasks.classify import ClassifyTask
from attention.train import make_optimizer, seeded_generator

log = logging.getLogger(__name__)

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


def check_population(configs: Sequence[Config]) -> None:
    """Refuse, in one line, configs that cannot train as one population."""
    if not configs:
        raise AttentionError("a population needs at least one trial")
    first = configs[0]
    if first.model.name != "ram":
        raise AttentionError(f"a population trains RAM models (model.name 'ram'), not '{first.model.name}'")
    if first.train.optimizer != "adam":
        raise AttentionError(f"a population trains with Adam; train.optimizer is '{first.train.optimizer}'")
    if first.train.compile:
        raise AttentionError("a population runs eagerly: set train.compile=false")
    for config in configs[1:]:
        why = population_mismatch(first, config)
        if why:
            raise AttentionError(f"trials of one population may differ only in {', '.join(PER_TRIAL)}; {why}")


@dataclass
class Trial:
    """What ``fit`` keeps for one run, for a trial of the population."""

    index: int
    config: Config
    run_dir: Path
    identity: str
    revision: str | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer  # only to read and write checkpoints in fit's format
    data_generator: torch.Generator
    sample_generator: torch.Generator
    stream: TrainingStream
    init_digest: str | None
    state: dict[str, Any] = field(default_factory=new_state)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    moments: dict[str, Any] | None = None  # Adam's state from a checkpoint, until it is in the population
    diverged: str | None = None


def open_trial(
    k: int,
    config: Config,
    run_dir: Path,
    mnist: Any,
    device: torch.device,
    resume: bool,
    lock: contextlib.ExitStack,
) -> Trial | dict[str, Any]:
    """``fit``'s prologue for one trial: its finished result, or everything to train it (its run
    directory then held in ``lock``; another process training it is waited for, as a study's worker
    waits)."""
    identity = config_hash(config)
    revision = git_revision()
    checkpoint_path = run_dir / CHECKPOINT
    if (done := finished_result(run_dir, config, resume=resume)) is not None:
        return done
    model = make_model(config, device)
    init_from = config.train.init_from
    init_digest = load_initial_weights(model, init_from, device) if init_from else None
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.enter_context(holding_run(run_dir, wait=True))
    if (done := finished_result(run_dir, config, resume=resume)) is not None:
        return done  # finished by another process while this one got ready
    if not (run_dir / CONFIG).exists():
        write_json(run_dir / CONFIG, to_dict(config))
    data_generator = torch.Generator().manual_seed(config.train.seed)
    trial = Trial(
        index=k,
        config=config,
        run_dir=run_dir,
        identity=identity,
        revision=revision,
        model=model,
        optimizer=make_optimizer(config, model),
        data_generator=data_generator,
        sample_generator=seeded_generator(config.train.seed + 1, device),
        stream=TrainingStream(mnist, config.data, data_generator),
        init_digest=init_digest,
    )
    trial.best_weights = weights_copy(model)
    if resume and checkpoint_path.exists():
        saved = read_checkpoint(checkpoint_path, device)
        model.load_state_dict(saved["model"])
        trial.optimizer.load_state_dict(saved["optimizer"])
        trial.moments = moments_of(trial)
        trial.best_weights = saved["best_model"]
        data_generator.set_state(saved["data_generator"])
        trial.sample_generator.set_state(saved["sample_generator"])
        trial.state.update(saved["state"])
        trial.metrics = read_metrics(run_dir)[: trial.state["epoch"]]
        log.info("resuming %s after epoch %d", run_dir, trial.state["epoch"])
    return trial


def torch_optimizer_state(trial: Trial, moments: dict[str, Any], lr: float) -> dict[str, Any]:
    """Trial's Adam state as ``torch.optim.Adam.state_dict()`` of its single model (fit's checkpoint),
    with the learning rate of its last step as ``fit`` leaves it."""
    optimizer = trial.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    params = list(trial.model.parameters())
    for p, exp_avg, exp_avg_sq in zip(params, moments["exp_avg"], moments["exp_avg_sq"], strict=True):
        # fused Adam keeps its step count as a float32 tensor on the parameter's device
        step = torch.tensor(float(moments["step"]), dtype=torch.float32, device=p.device)
        optimizer.state[p] = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    return optimizer.state_dict()


def moments_of(trial: Trial) -> dict[str, Any] | None:
    """The Adam state loaded from a checkpoint into the trial's torch optimizer, in the population's form."""
    params = list(trial.model.parameters())
    states = [trial.optimizer.state.get(p) for p in params]
    if not all(states):
        return None
    return {
        "step": int(states[0]["step"].item()),
        "exp_avg": [s["exp_avg"] for s in states],
        "exp_avg_sq": [s["exp_avg_sq"] for s in states],
    }


def finish_trial(trial: Trial, mnist: Any, device: torch.device, population_size: int) -> dict[str, Any]:
    """``fit``'s epilogue: the best weights to model.pt, the test evaluation and result.json."""
    model, state = trial.model, trial.state
    model.load_state_dict(trial.best_weights)
    atomic_torch_save(trial.run_dir / WEIGHTS, trial.best_weights)
    result = result_record(
        config=trial.config,
        model=model,
        state=state,
        evaluation=evaluate_model(model, trial.config, mnist, device=device),
        selection=ClassifyTask.selection_result(state["best_error"]),
        epochs_budget=trial.config.train.epochs,
        identity=trial.identity,
        revision=trial.revision,
        init_digest=trial.init_digest,
        device=device,
    )
    # trained in a population of this many trials at its last epoch: train_seconds is the wall time of the
    # shared epochs, not this trial's share of them
    result["population_size"] = population_size
    write_json(trial.run_dir / RESULT, result)
    return result
