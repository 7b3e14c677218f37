"""``fit_population(configs)``: train K runs as one population, each with the run directory ``fit`` writes.

Each trial is the run ``fit(config)`` would train: the same initial weights (``make_model``), its own data
stream (``TrainingStream`` seeded by ``train.seed``), its own location samples (a generator seeded
``train.seed + 1``), Adam with its own learning rate and schedule, its own validation, model selection and
stopping rules, and the same files (config.json, metrics.jsonl, checkpoint.pt every epoch, model.pt,
result.json). The checkpoint has ``fit``'s format, so a trial stopped in a population resumes alone with
``fit(..., resume=True)`` and the other way round. What is shared is the step: every layer of every trial
is one batched product (attention/population.py).

A trial leaves the population when it ends (its epochs done, early stopping, a time budget), when its loss
or gradient norm becomes non-finite (it fails as ``fit`` would, with the same message) or when its
``on_epoch`` callback raises (a search's pruner); the others go on. Between epochs the population is rebuilt
without the trials that left, so they cost nothing afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from attention import AttentionError
from attention.build import pick_device, resolve_config
from attention.config import Config, config_hash
from attention.data.mnist import load_mnist
from attention.data.tasks import FixedSet, fixed_set, to_float
from attention.population import PopulationRAM, hybrid_per_trial
from attention.population_adam import PopulationAdam
from attention.population_trials import (
    Trial,
    check_population,
    finish_trial,
    open_trial,
    set_torch_optimizer_state,
)
from attention.run_records import record_validation
from attention.runs import git_revision, write_metrics
from attention.tasks.classify import ClassifyTask
from attention.train import divergence_message, finish_run, lr_factor, seeded_generator

log = logging.getLogger(__name__)

Outcome = dict[str, Any] | BaseException
"""How a trial ended: its result (as ``fit`` returns it) or the exception that ended it."""


@torch.no_grad()
def population_error_pct(
    population: PopulationRAM,
    dataset: FixedSet,
    *,
    sample: bool,
    generators: Sequence[torch.Generator],
    batch_size: int,
    device: torch.device,
) -> list[float]:
    """:func:`attention.evaluate.error_pct` of every trial on one set, in one pass: each batch is read by
    all K trials, trial k drawing from ``generators[k]``."""
    wrong = torch.zeros(population.size, dtype=torch.long, device=device)
    for images, labels in dataset.batches(batch_size, device):
        stacked = images.unsqueeze(0).expand(population.size, *images.shape)  # (K, B, C, H, W)
        rollout = population.unroll(stacked, sample=sample, generators=generators)
        wrong += (rollout.logits.argmax(dim=2) != labels[None]).sum(dim=1)
    return [100.0 * w / len(dataset.labels) for w in wrong.tolist()]


def fit_population(
    configs: Sequence[Config],
    *,
    run_dirs: Sequence[str | Path] | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    device: str | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any], bool], None] | None = None,
    on_end: Callable[[int, Outcome], None] | None = None,
    wait_if_busy: bool = False,
) -> list[Outcome]:
    """Train ``configs`` as one population; returns each trial's outcome (its result, or the exception
    that ended it), in order, and calls ``on_end(k, outcome)`` as soon as trial k ends.

    ``on_epoch(k, row, final)`` is called with trial k's metrics after each of its epochs (``final``: the
    trial ends after it, as ``fit``'s ``on_epoch`` says), once its checkpoint is
    written; an exception it raises ends trial k only, leaving its run resumable. A trial whose loss or
    gradient norm becomes non-finite ends with the :class:`AttentionError` ``fit`` would raise. A trial
    whose run is finished returns its result without training; an unfinished one continues from its
    checkpoint (``resume``). A trial whose run another process trains ends with
    :class:`attention.runs.RunBusy`, or with ``wait_if_busy`` is waited for (as ``fit``'s option).
    """
    configs = [resolve_config(c) for c in configs]
    check_population(configs)
    if run_dirs is not None and len(run_dirs) != len(configs):
        raise AttentionError(
            f"{len(configs)} trials need {len(configs)} run directories, got {len(run_dirs)}"
        )
    device_ = pick_device(device)
    mnist = load_mnist(data_dir)
    outcomes: list[Outcome | None] = [None] * len(configs)

    locks: dict[int, contextlib.ExitStack] = {}
    revision = git_revision()  # the code this call starts with, for every trial's result

    def end(k: int, outcome: Outcome) -> None:
        outcomes[k] = outcome
        if k in locks:
            locks.pop(k).close()  # its run is free as soon as it leaves, not when the population ends
        if on_end is not None:
            on_end(k, outcome)

    directories = [
        Path(run_dirs[k]) if run_dirs is not None else Path(runs_dir) / config_hash(config)
        for k, config in enumerate(configs)
    ]
    with contextlib.ExitStack() as held:  # every trial's run lock, released here at the latest
        trials: list[Trial] = []
        for k, config in enumerate(configs):
            locks[k] = held.enter_context(contextlib.ExitStack())
            try:
                if directories[k].resolve() in {d.resolve() for d in directories[:k]}:
                    raise AttentionError(f"{directories[k]} is the run of two trials of this population")
                trial = open_trial(
                    k,
                    config,
                    directories[k],
                    mnist,
                    device_,
                    revision=revision,
                    resume=resume,
                    hold=locks[k],
                    wait_if_busy=wait_if_busy,
                )
            except AttentionError as error:
                end(k, error)
                continue
            if isinstance(trial, dict):  # finished before: its result
                end(k, trial)
            elif trial.state["stopped"] is not None or trial.state["epoch"] >= config.train.epochs:
                # stopped after its last epoch's checkpoint, before its result: finished as fit finishes
                # it (no epoch more); where its epochs ran, alone or stacked, is not known here
                end(k, finish_run(trial.run))
            else:
                trials.append(trial)
        if trials:
            _train_together(trials, mnist, device_, progress=progress, on_epoch=on_epoch, end=end)
    return outcomes  # type: ignore[return-value]


def _train_together(
    trials: list[Trial],
    mnist: Any,
    device_: torch.device,
    *,
    progress: bool,
    on_epoch: Callable[[int, dict[str, Any], bool], None] | None,
    end: Callable[[int, Outcome], None],
) -> None:
    """The epochs of a population: every trial steps together; one that ends (finished, diverged, or
    stopped by ``on_epoch``) leaves, and the others go on."""
    first = trials[0].config
    t = first.train
    validation = fixed_set(mnist, first.data, "validation")
    steps_per_epoch = math.ceil(len(trials[0].stream) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs
    population, optimizer = _assemble(trials)
    while trials:
        started = time.perf_counter()
        epochs = [trial.state["epoch"] for trial in trials]
        size = len(trials)
        with tqdm(
            total=steps_per_epoch,
            disable=not progress,
            leave=False,
            desc=f"population of {size}, epochs {min(epochs) + 1}-{max(epochs) + 1}/{t.epochs}",
        ) as bar:
            training = _train_epoch(population, optimizer, trials, steps_per_epoch, total_steps, device_, bar)
        val_errors = population_error_pct(
            population,
            validation,
            sample=False,
            generators=[seeded_generator(first.data.validation_seed, device_) for _ in trials],
            batch_size=t.eval_batch_size,
            device=device_,
        )
        epoch_seconds = time.perf_counter() - started
        leaving: list[int] = []
        for k, trial in enumerate(trials):
            if trial.diverged is not None:
                end(trial.index, AttentionError(trial.diverged))
                leaving.append(k)
                continue
            outcome = _end_epoch(trial, k, population, optimizer, training[k], val_errors[k], epoch_seconds)
            try:
                if on_epoch is not None:
                    on_epoch(trial.index, trial.metrics[-1], outcome)
            except (
                Exception
            ) as error:  # the caller's decision (a pruner, an abandoned trial): this trial only
                end(trial.index, error)
                leaving.append(k)
                continue
            if outcome:
                end(trial.index, finish_trial(trial, size))
                leaving.append(k)
        if leaving:
            trials = [trial for k, trial in enumerate(trials) if k not in leaving]
            if trials:
                population, optimizer = _reassemble(population, optimizer, trials, leaving)


def _assemble(trials: list[Trial]) -> tuple[PopulationRAM, PopulationAdam]:
    population = PopulationRAM.from_models([trial.model for trial in trials])
    t = trials[0].config.train
    optimizer = PopulationAdam(
        population,
        learning_rates=[trial.config.train.learning_rate for trial in trials],
        weight_decay=t.weight_decay,
    )
    for k, trial in enumerate(trials):
        if trial.moments is not None:
            optimizer.load_trial_state(k, trial.moments)
            trial.moments = None
    return population, optimizer


def _reassemble(
    population: PopulationRAM, optimizer: PopulationAdam, staying: list[Trial], leaving: list[int]
) -> tuple[PopulationRAM, PopulationAdam]:
    """The population without the trials at ``leaving``: each staying trial's weights and Adam state move
    into a smaller one, so the trials that left cost nothing from now on."""
    kept = [k for k in range(population.size) if k not in leaving]
    for k, trial in zip(kept, staying, strict=True):
        trial.model.load_state_dict(population.trial_state(k))
        trial.moments = optimizer.trial_state(k)
    return _assemble(staying)


def _train_epoch(
    population: PopulationRAM,
    optimizer: PopulationAdam,
    trials: list[Trial],
    steps_per_epoch: int,
    total_steps: int,
    device: torch.device,
    bar: tqdm,
) -> list[dict[str, float]]:
    """One epoch of every trial (each its own next epoch), as ``train_epoch`` runs it for one."""
    t = trials[0].config.train
    size = len(trials)
    started = time.perf_counter()
    keys = ("loss", "cross_entropy", "reinforce", "baseline", "reward", "errors")
    sums = torch.zeros(len(keys), size, dtype=torch.float64, device=device)
    seen = 0
    active = [trial.diverged is None for trial in trials]
    rates = [trial.config.train.learning_rate for trial in trials]
    batches = zip(*(trial.stream.epoch(t.batch_size) for trial in trials), strict=True)
    for step, pairs in enumerate(batches):
        for k, trial in enumerate(trials):
            epoch = trial.state["epoch"]
            progress_ = (epoch * steps_per_epoch + step) / total_steps
            factor = lr_factor(trial.config, progress_, epoch, trial.state["plateau_factor"])
            rates[k] = optimizer.learning_rates[k] = trial.config.train.learning_rate * factor
        images = torch.stack([to_float(raw, device) for raw, _ in pairs])  # (K, B, 1, S, S)
        labels = torch.stack([targets for _, targets in pairs]).to(device)  # (K, B)
        rollout = population.unroll(
            images, sample=True, generators=[trial.sample_generator for trial in trials]
        )
        terms = hybrid_per_trial(
            rollout, labels, reinforce_weight=t.reinforce_weight, baseline_weight=t.baseline_weight
        )
        totals = terms.total.detach()
        _drop_diverged(trials, active, "loss", totals, step)
        mask = torch.tensor(active, device=device)
        # a masked trial's loss is left out by selection, not by multiplying with 0 (0 * NaN is NaN)
        optimizer.zero_grad()
        torch.where(mask, terms.total, torch.zeros((), device=device)).sum().backward()
        grad = population.flat_grad()  # (K, P)
        norms = grad.pow(2).sum(dim=1).sqrt()
        _drop_diverged(trials, active, "gradient norm", norms, step)
        if t.grad_clip is not None:  # clip_grad_norm_'s rule, per trial
            grad = grad * (t.grad_clip / (norms + 1e-6)).clamp(max=1.0)[:, None]
        optimizer.step(grad, active)
        n = labels.shape[1]
        seen += n
        values = torch.stack(
            [totals, terms.cross_entropy, terms.reinforce, terms.baseline, terms.reward, terms.errors / n]
        ).detach()
        sums += values.double() * n
        bar.update()
    elapsed = time.perf_counter() - started
    per_trial = (sums / seen).tolist()
    # the metrics row of a trial alone (ClassifyTask.epoch_metrics), so the two cannot drift apart
    names = ("loss", "cross_entropy", "reinforce", "baseline", "reward")
    return [
        ClassifyTask.epoch_metrics(
            {
                "lr": rates[k],
                **{name: per_trial[i][k] for i, name in enumerate(names)},
                "error_pct": 100 * per_trial[5][k],
                # images of this trial per second of the shared epoch; the population's is size times it
                "per_s": seen / elapsed,
            }
        )
        for k in range(size)
    ]


def _drop_diverged(
    trials: list[Trial], active: list[bool], what: str, values: torch.Tensor, step: int
) -> None:
    """Mask out each active trial whose ``what`` (one value per trial) is not finite, with fit's message:
    the others train on."""
    finite = torch.isfinite(values).tolist()
    for k, trial in enumerate(trials):
        if active[k] and not finite[k]:
            trial.diverged = divergence_message(
                what, values[k].item(), trial.state["epoch"], step, trial.run_dir
            )
            active[k] = False


def _end_epoch(
    trial: Trial,
    k: int,
    population: PopulationRAM,
    optimizer: PopulationAdam,
    training: dict[str, float],
    val_error: float,
    epoch_seconds: float,
) -> bool:
    """Record trial k's epoch as ``fit`` does (selection, stopping rules, metrics, checkpoint); returns
    whether the trial has ended."""
    state = trial.state
    state["epoch"] += 1
    state["train_seconds"] += epoch_seconds
    weights = population.trial_state(k)
    if record_validation(state, val_error, trial.config):
        trial.checkpoint.best_weights = weights
    trial.metrics.append(
        {
            "epoch": state["epoch"],
            **training,
            "val_error_pct": val_error,
            "seconds": epoch_seconds,
            "elapsed_seconds": state["train_seconds"],
        }
    )
    write_metrics(trial.run_dir, trial.metrics)
    # the trial's single model and torch optimizer take its part of the population, so its checkpoint is
    # the one fit writes (and resumes)
    trial.model.load_state_dict(weights)
    set_torch_optimizer_state(trial, optimizer.trial_state(k), training["lr"])
    trial.checkpoint.save()
    log.info(
        "%s epoch %d: loss %.4f train error %.2f%% val error %.2f%%",
        trial.run_dir.name,
        state["epoch"],
        training["train_loss"],
        training["train_error_pct"],
        val_error,
    )
    return state["stopped"] is not None or state["epoch"] >= trial.config.train.epochs
