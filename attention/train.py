"""``fit(config)``: train one run end to end, resumably, and write its run directory.

The same function serves the CLI, studies and search objectives, for every task: the task
(:mod:`attention.tasks`) says what a batch is, how a rollout becomes losses, how the model is evaluated
and which number selects the best weights (the validation error of an image task, the validation miss rate
of a game). ``fit`` is three pieces: ``open_run`` (a finished run's result, or the ``Checkpoint`` of one to
train, attention/run_records.py, restored when it resumes), the epoch loop, and ``finish_run`` (model.pt,
the test evaluation, result.json). A population's trials (attention/population_trials.py) open and finish
through the same two functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from attention import AttentionError
from attention.build import make_model, pick_device, resolve_config
from attention.config import Config, config_hash, to_dict
from attention.run_records import (
    Checkpoint,
    load_initial_weights,
    record_validation,
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
    write_metrics,
)
from attention.tasks import TASKS

log = logging.getLogger(__name__)

OnEpoch = Callable[[dict[str, Any], bool], None]
"""What ``fit`` calls after each epoch with its metrics row and whether it is the last."""

# How often (in steps) the progress bar's loss and error are refreshed.
PROGRESS_EVERY = 25


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = config.train
    # The fused kernels update every parameter in one pass instead of a dozen list-wide ops per step (about
    # 5% of a step of the MNIST RAM on one thread here). Their rounding differs from the foreach kernels in
    # the last bits, so runs before and after this choice are not bit-identical; a resumed checkpoint keeps
    # the kernel it was started with.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=t.learning_rate,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            fused=fused,
        )
    return torch.optim.Adam(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)


def lr_factor(config: Config, progress: float, epoch: int, plateau_factor: float) -> float:
    """Multiplier of the base learning rate; ``progress`` in [0, 1] is the fraction of all steps done."""
    t = config.train
    floor = t.min_lr_fraction
    if t.schedule == "linear":
        return 1 - (1 - floor) * progress
    if t.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if t.schedule == "step":
        return t.step_gamma ** (epoch // t.step_epochs)
    if t.schedule == "plateau":
        return plateau_factor
    return 1.0


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A random stream of its own on ``device`` (location samples, validation draws)."""
    return torch.Generator(device=device).manual_seed(seed)


def divergence_message(what: str, value: float, epoch: int, step: int, run_dir: Path) -> str:
    """The one-line error for a loss or gradient norm that became non-finite (fit and populations)."""
    kept = (
        f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}" if epoch else "no epoch had finished"
    )
    return (
        f"{what} became {value} in epoch {epoch + 1}, step {step + 1}; training stopped and {kept}; "
        "lower train.learning_rate or set train.grad_clip and start a new run"
    )


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Any],
    *,
    config: Config,
    step_losses: Callable[[Any, torch.Generator], Any],
    learning_rate: Callable[[int], float],
    sample_generator: torch.Generator,
    epoch: int,
    run_dir: Path,
    bar: tqdm,
) -> dict[str, float]:
    """One pass of loss steps over ``batches``; returns the epoch's averages per example (the task names
    them in its metrics row): ``loss``, ``cross_entropy``, ``reinforce``, ``baseline``, ``reward``,
    ``error_pct``, ``per_s`` (examples per second) and the last ``lr``.

    ``step_losses(batch, generator) -> (LossTerms, n)`` is the task's trainer; ``learning_rate(step)``
    gives the rate of each step. A non-finite loss or gradient norm stops training with an
    :class:`AttentionError` before the weights are touched.
    """
    t = config.train
    model.train()
    started = time.perf_counter()
    sums = {"loss": 0.0, "cross_entropy": 0.0, "reinforce": 0.0, "baseline": 0.0, "reward": 0.0}
    errors, seen, lr = 0.0, 0, t.learning_rate
    for step, batch in enumerate(batches):
        lr = learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        terms, n = step_losses(batch, sample_generator)
        if not torch.isfinite(terms.total):
            raise AttentionError(divergence_message("loss", terms.total.item(), epoch, step, run_dir))
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        # The norm is needed anyway to catch non-finite gradients before they reach the weights.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
        if not torch.isfinite(norm):
            raise AttentionError(divergence_message("gradient norm", norm.item(), epoch, step, run_dir))
        optimizer.step()
        seen += n
        errors += terms.errors.item()
        if terms.entropy is not None:
            sums["entropy"] = sums.get("entropy", 0.0) + terms.entropy.item() * n
        for key in sums:
            if key != "entropy":
                value = terms.total if key == "loss" else getattr(terms, key)
                sums[key] += value.item() * n
        bar.update()
        if step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", err=f"{100 * errors / seen:.2f}%")
    return {
        "lr": lr,
        **{key: total / seen for key, total in sums.items()},
        "error_pct": 100 * errors / seen,
        "per_s": seen / (time.perf_counter() - started),
    }


def _train_epochs(
    checkpoint: Checkpoint,
    *,
    config: Config,
    run_dir: Path,
    metrics: list[dict[str, Any]],
    progress: bool,
    stop_after_epochs: int | None,
    on_epoch: OnEpoch | None,
) -> bool:
    """The epoch loop: train, validate, record, checkpoint, until the task's epochs are done or a stopping
    rule fires. Returns False when ``stop_after_epochs`` ended it first (a resumable interruption)."""
    task, model, state, t = checkpoint.task, checkpoint.model, checkpoint.state, config.train
    step_losses = task.trainer(model)  # made once: a compiled graph lives across epochs
    steps_per_epoch, num_epochs = task.steps_per_epoch, task.num_epochs
    total_steps = steps_per_epoch * num_epochs
    calls_epochs = 0
    while state["stopped"] is None and state["epoch"] < num_epochs:
        if stop_after_epochs is not None and calls_epochs >= stop_after_epochs:
            return False
        epoch = state["epoch"]
        started = time.perf_counter()

        def learning_rate(step: int, epoch: int = epoch) -> float:
            progress_ = (epoch * steps_per_epoch + step) / total_steps
            return t.learning_rate * lr_factor(config, progress_, epoch, state["plateau_factor"])

        with tqdm(
            total=steps_per_epoch, disable=not progress, leave=False, desc=f"epoch {epoch + 1}/{num_epochs}"
        ) as bar:
            training = train_epoch(
                model,
                checkpoint.optimizer,
                task.batches(),
                config=config,
                step_losses=step_losses,
                learning_rate=learning_rate,
                sample_generator=checkpoint.sample_generator,
                epoch=epoch,
                run_dir=run_dir,
                bar=bar,
            )
        selection, validation = task.validate(model)
        epoch_seconds = time.perf_counter() - started
        state["epoch"] = epoch + 1
        state["train_seconds"] += epoch_seconds
        if record_validation(state, selection, config):
            checkpoint.best_weights = weights_copy(model)
        metrics.append(
            {
                "epoch": epoch + 1,
                **task.epoch_metrics(training, epoch + 1),
                **validation,
                "seconds": epoch_seconds,
                "elapsed_seconds": state["train_seconds"],
            }
        )
        write_metrics(run_dir, metrics)
        checkpoint.save()
        log.info(
            "epoch %d: loss %.4f, %s (%.1fs)",
            epoch + 1,
            training["loss"],
            ", ".join(f"{key} {value:.4g}" for key, value in validation.items()),
            epoch_seconds,
        )
        calls_epochs += 1
        if on_epoch is not None:  # final: the run ends here (its epochs done or a stopping rule fired)
            on_epoch(metrics[-1], state["stopped"] is not None or state["epoch"] >= num_epochs)
    return True


@dataclass
class OpenRun:
    """A run ready to train (``fit``'s and a population trial's): its identity and the ``Checkpoint``
    holding its model, optimizer, task and streams, restored when it resumes, with its metrics so far."""

    config: Config
    run_dir: Path
    identity: str
    revision: str | None  # the code the training call started with
    init_digest: str | None
    checkpoint: Checkpoint
    metrics: list[dict[str, Any]]


def open_run(
    config: Config,
    run_dir: Path,
    task: Any,
    device: torch.device,
    *,
    revision: str | None,
    resume: bool,
    wait: bool,
    hold: contextlib.ExitStack,
) -> dict[str, Any] | OpenRun:
    """A run's prologue: its result if it is finished, otherwise everything to train it, its run directory
    then held in ``hold`` (:func:`attention.runs.holding_run`; another process training it is refused, or
    with ``wait`` waited for). The model and the training data are made before anything is written, so an
    impossible config or missing data leaves no run directory behind."""
    if (done := finished_result(run_dir, config, resume=resume)) is not None:
        return done
    model = make_model(config, device)
    init_from = config.train.init_from
    init_digest = load_initial_weights(model, init_from, device) if init_from else None
    task.steps_per_epoch  # noqa: B018 -- loads the training data (or fails) before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    hold.enter_context(holding_run(run_dir, wait=wait))
    # look again: another process may have finished or started this run while we got ready
    if (done := finished_result(run_dir, config, resume=resume)) is not None:
        return done
    if not (run_dir / CONFIG).exists():  # a run's record of what it is, written once
        write_json(run_dir / CONFIG, to_dict(config))
    checkpoint = Checkpoint(
        run_dir / CHECKPOINT,
        model=model,
        optimizer=make_optimizer(config, model),
        task=task,
        sample_generator=seeded_generator(config.train.seed + 1, device),
        device=device,
    )
    metrics: list[dict[str, Any]] = []
    if resume and checkpoint.path.exists():
        checkpoint.restore()
        metrics = read_metrics(run_dir)[: checkpoint.state["epoch"]]
        log.info("resuming %s after epoch %d", run_dir, checkpoint.state["epoch"])
    return OpenRun(
        config=config,
        run_dir=run_dir,
        identity=config_hash(config),
        revision=revision,
        init_digest=init_digest,
        checkpoint=checkpoint,
        metrics=metrics,
    )


def finish_run(run: OpenRun, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's epilogue: load the best weights, save them as the run's weights, evaluate them once and
    write result.json (with ``extra`` fields)."""
    checkpoint = run.checkpoint
    model, state, task = checkpoint.model, checkpoint.state, checkpoint.task
    model.load_state_dict(checkpoint.best_weights)
    atomic_torch_save(run.run_dir / WEIGHTS, checkpoint.best_weights)
    result = result_record(
        config=run.config,
        model=model,
        state=state,
        evaluation=task.evaluate(model),
        selection=task.selection_result(state["best_error"]),
        epochs_budget=task.num_epochs,
        identity=run.identity,
        revision=run.revision,
        init_digest=run.init_digest,
        device=checkpoint.device,
    )
    result.update(extra or {})
    write_json(run.run_dir / RESULT, result)
    return result


def fit(
    config: Config,
    *,
    runs_dir: str | Path = "runs",
    run_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch: OnEpoch | None = None,
    wait_if_busy: bool = False,
) -> dict[str, Any]:
    """Train ``config`` and return its result (also written to ``result.json``).

    The run directory is ``runs_dir/<config hash>`` unless ``run_dir`` is given. A finished run is not
    retrained: its result is returned. An unfinished one continues only with ``resume=True``.
    ``stop_after_epochs`` ends this call early (as an interruption would), leaving a resumable run.
    ``on_epoch(row, final)`` is called with each epoch's metrics once its checkpoint is written (a search
    reports to its pruner there); ``final`` says that the run ends after this epoch (its epochs are done or
    a stopping rule fired). An exception it raises ends the call and leaves the run resumable.
    While it trains, the call holds the run directory (:func:`attention.runs.holding_run`): if another
    process is training the same run, it refuses (:class:`attention.runs.RunBusy`), or with
    ``wait_if_busy`` waits for it and then returns its result or continues it.
    """
    config = resolve_config(config)
    revision = git_revision()  # the code this call starts with, not whatever is checked out at the end
    run_dir = Path(run_dir) if run_dir else Path(runs_dir) / config_hash(config)
    device_ = pick_device(device)
    task = TASKS.get(config.data.task)(config, data_dir=data_dir, device=device_)
    with contextlib.ExitStack() as hold:
        run = open_run(
            config, run_dir, task, device_, revision=revision, resume=resume, wait=wait_if_busy, hold=hold
        )
        if isinstance(run, dict):  # finished before: its result
            return run
        finished = _train_epochs(
            run.checkpoint,
            config=config,
            run_dir=run_dir,
            metrics=run.metrics,
            progress=progress,
            stop_after_epochs=stop_after_epochs,
            on_epoch=on_epoch,
        )
        if not finished:
            return {"interrupted_after_epoch": run.checkpoint.state["epoch"], "run_dir": str(run_dir)}
        return finish_run(run)
