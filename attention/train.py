"""``fit(config)``: train one run end to end, resumably, and write its run directory.

The same function serves the CLI, studies and search objectives. Model selection is on the validation
error (mean locations); the test error is measured once, at the end, with the best validation weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from attention import AttentionError
from attention.config import Config, config_hash, to_dict
from attention.data.mnist import load_mnist
from attention.data.tasks import TrainingStream, fixed_set, resolve, to_float
from attention.evaluate import error_pct, evaluate_model
from attention.heads import WHERE_HEADS
from attention.linear import kernel_report
from attention.losses import hybrid
from attention.model import build_model
from attention.runs import (
    CHECKPOINT,
    CONFIG,
    RESULT,
    WEIGHTS,
    atomic_torch_save,
    git_revision,
    read_json,
    read_metrics,
    run_identity,
    safe_load,
    weights_file,
    write_json,
    write_metrics,
)

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "step", "plateau")
# How often (in steps) the progress bar's loss and error are refreshed.
PROGRESS_EVERY = 25
# torch.compile mode of the compiled unroll (see training_unroll): the default. "reduce-overhead" (CUDA
# graphs) would also take the kernel launches off a GPU step, but crashed the process (segmentation fault)
# on an H100 with PyTorch 2.11.
COMPILE_MODE: str | None = None


def resolve_config(config: Config) -> Config:
    """Fill derived defaults and refuse impossible settings before anything is trained."""
    config = dataclasses.replace(config, data=resolve(config.data))
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
            t.reinforce_weight >= 0 and t.baseline_weight >= 0,
            "train.reinforce_weight and baseline_weight must be >= 0",
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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AttentionError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return torch.device(device)


def make_model(config: Config, device: torch.device) -> torch.nn.Module:
    """Build the model with weights drawn from the run's seed, without touching the global RNG state."""
    size = config.data.canvas_size
    # fork every device's RNG: manual_seed seeds them all, and the caller's streams must not change
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(config.train.seed)
        model = build_model(config.model, image_size=(size, size))
    if compiled_part(config) == "sensor":
        model.reader.use_compiled_sensor()
    return model.to(device)


def compiled_part(config: Config) -> str | None:
    """What ``train.compile`` compiles for this config: ``"unroll"`` for a RAM whose where-head draws no
    random numbers (the soft reader), ``"sensor"`` for a retina (its sampling policy breaks a whole-unroll
    graph), else None. The one place that decides it: training, the bench and the tables ask here."""
    m = config.model
    if not config.train.compile or m.name != "ram":
        return None
    if not WHERE_HEADS.get(m.where.policy).stochastic:
        return "unroll"
    return "sensor" if m.reader.name == "retina" else None


def training_unroll(model: torch.nn.Module, config: Config) -> Callable[..., Any]:
    """What a training step calls for its rollout: ``unroll(images, generator)`` with sampling.

    With ``train.compile`` a model whose unroll draws no random numbers (a deterministic where-head: the
    soft reader) runs it torch.compile'd as one graph. That removes most of the per-operation cost of a
    small recurrent model, which is what bounds a step on a GPU (``COMPILE_MODE``). A stochastic
    model keeps the eager unroll (its sampling generator breaks the graph) and compiles the retina's sensor
    only (:func:`make_model`).
    """
    if compiled_part(config) == "unroll":
        compiled = torch.compile(
            lambda images: model.unroll(images, sample=True, generator=None),
            dynamic=True,  # one graph for the full batches and the last, smaller one
            mode=COMPILE_MODE,
        )
        return lambda images, generator: compiled(images)
    return lambda images, generator: model.unroll(images, sample=True, generator=generator)


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


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _diverged(what: str, value: float, epoch: int, step: int, run_dir: Path) -> str:
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
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    config: Config,
    learning_rate: Callable[[int], float],
    sample_generator: torch.Generator,
    device: torch.device,
    epoch: int,
    run_dir: Path,
    bar: tqdm,
    unroll: Callable[..., Any] | None = None,
) -> dict[str, float]:
    """One pass of hybrid-loss steps over ``batches``; returns the epoch's training metrics.

    ``learning_rate(step)`` gives the rate of each step; ``unroll`` is :func:`training_unroll`'s (made
    here when not given: pass one to keep a compiled graph across epochs). A non-finite loss or gradient
    norm stops training with an :class:`AttentionError` before the weights are touched.
    """
    t = config.train
    unroll = unroll or training_unroll(model, config)
    model.train()
    started = time.perf_counter()
    sums = {"loss": 0.0, "cross_entropy": 0.0, "reinforce": 0.0, "baseline": 0.0, "reward": 0.0}
    errors, seen, lr = 0.0, 0, t.learning_rate
    for step, (images, labels) in enumerate(batches):
        lr = learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = to_float(images, device), labels.to(device)
        rollout = unroll(images, sample_generator)
        terms = hybrid(
            rollout, labels, reinforce_weight=t.reinforce_weight, baseline_weight=t.baseline_weight
        )
        if not torch.isfinite(terms.total):
            raise AttentionError(_diverged("loss", terms.total.item(), epoch, step, run_dir))
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        # The norm is needed anyway to catch non-finite gradients before they reach the weights.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
        if not torch.isfinite(norm):
            raise AttentionError(_diverged("gradient norm", norm.item(), epoch, step, run_dir))
        optimizer.step()
        n = labels.shape[0]
        seen += n
        errors += terms.errors.item()
        for key in sums:
            value = terms.total if key == "loss" else getattr(terms, key)
            sums[key] += value.item() * n
        bar.update()
        if step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", err=f"{100 * errors / seen:.2f}%")
    return {
        "lr": lr,
        "train_loss": sums["loss"] / seen,
        "cross_entropy": sums["cross_entropy"] / seen,
        "reinforce": sums["reinforce"] / seen,
        "baseline_mse": sums["baseline"] / seen,
        "mean_reward": sums["reward"] / seen,
        "train_error_pct": 100 * errors / seen,
        "train_images_per_s": seen / (time.perf_counter() - started),
    }


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
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise AttentionError(
            f"train.init_from: the weights in {path} do not fit this model ({first}); the reader "
            "output, glimpse network, core and heads must have the same sizes"
        ) from None
    return hashlib.sha256(payload).hexdigest()


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` and return its result (also written to ``result.json``).

    The run directory is ``runs_dir/<config hash>`` unless ``run_dir`` is given. A finished run is not
    retrained: its result is returned. An unfinished one continues only with ``resume=True``.
    ``stop_after_epochs`` ends this call early (as an interruption would), leaving a resumable run.
    ``on_epoch(row)`` is called with each epoch's metrics once its checkpoint is written (a search reports
    to its pruner there); an exception it raises ends the call and leaves the run resumable.
    """
    config = resolve_config(config)
    revision = git_revision()  # the code this call starts with, not whatever is checked out at the end
    identity = config_hash(config)
    run_dir = Path(run_dir) if run_dir else Path(runs_dir) / identity
    device_ = pick_device(device)
    checkpoint_path = run_dir / CHECKPOINT
    if (run_dir / CONFIG).exists():
        if run_identity(run_dir) != identity:
            raise AttentionError(f"{run_dir} holds a run of another configuration; choose another --run-dir")
        if (run_dir / RESULT).exists():
            log.info("run %s is finished; returning its result", run_dir)
            return read_json(run_dir / RESULT)
        if checkpoint_path.exists() and not resume:
            raise AttentionError(
                f"{run_dir} holds an unfinished run: pass --resume to continue it, "
                "or delete the directory to start again"
            )
    model = make_model(config, device_)  # refuses impossible models before anything is written
    init_from = config.train.init_from
    init_digest = load_initial_weights(model, init_from, device_) if init_from else None
    mnist = load_mnist(data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / CONFIG).exists():  # a run's record of what it is, written once
        write_json(run_dir / CONFIG, to_dict(config))
    validation = fixed_set(mnist, config.data, "validation")
    optimizer = make_optimizer(config, model)
    data_generator = torch.Generator().manual_seed(config.train.seed)
    sample_generator = _generator(config.train.seed + 1, device_)
    stream = TrainingStream(mnist, config.data, data_generator)
    unroll = training_unroll(model, config)
    t = config.train
    steps_per_epoch = math.ceil(len(stream) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs

    state = new_state()
    best_weights = _weights(model)
    metrics: list[dict[str, Any]] = []
    if resume and checkpoint_path.exists():
        saved = safe_load(checkpoint_path, map_location=device_)
        if saved.get("device_type", "cpu") != device_.type:
            raise AttentionError(
                f"{checkpoint_path} was written on {saved.get('device_type')}; resume it with "
                f"--device {saved.get('device_type')} (its random streams belong to that device)"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best_weights = saved["best_model"]
        data_generator.set_state(saved["data_generator"])
        sample_generator.set_state(saved["sample_generator"])
        state.update(saved["state"])
        metrics = read_metrics(run_dir)[: state["epoch"]]
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])

    calls_epochs = 0
    while state["stopped"] is None and state["epoch"] < t.epochs:
        if stop_after_epochs is not None and calls_epochs >= stop_after_epochs:
            return {"interrupted_after_epoch": state["epoch"], "run_dir": str(run_dir)}
        epoch = state["epoch"]
        started = time.perf_counter()

        def learning_rate(step: int, epoch: int = epoch) -> float:
            progress_ = (epoch * steps_per_epoch + step) / total_steps
            return t.learning_rate * lr_factor(config, progress_, epoch, state["plateau_factor"])

        with tqdm(
            total=steps_per_epoch, disable=not progress, leave=False, desc=f"epoch {epoch + 1}/{t.epochs}"
        ) as bar:
            training = train_epoch(
                model,
                optimizer,
                stream.epoch(t.batch_size),
                config=config,
                learning_rate=learning_rate,
                sample_generator=sample_generator,
                device=device_,
                epoch=epoch,
                run_dir=run_dir,
                bar=bar,
                unroll=unroll,
            )
        val_error = error_pct(
            model,
            validation,
            sample=False,
            batch_size=t.eval_batch_size,
            device=device_,
            generator=_generator(config.data.validation_seed, device_),
        )
        epoch_seconds = time.perf_counter() - started
        state["epoch"] = epoch + 1
        state["train_seconds"] += epoch_seconds
        if record_validation(state, val_error, config):
            best_weights = _weights(model)
        metrics.append(
            {
                "epoch": epoch + 1,
                **training,
                "val_error_pct": val_error,
                "seconds": epoch_seconds,
                "elapsed_seconds": state["train_seconds"],
            }
        )
        write_metrics(run_dir, metrics)
        atomic_torch_save(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_model": best_weights,
                "data_generator": data_generator.get_state(),
                "sample_generator": sample_generator.get_state(),
                "state": state,
                "device_type": device_.type,
            },
        )
        log.info(
            "epoch %d: loss %.4f train error %.2f%% val error %.2f%% (%.1fs)",
            epoch + 1,
            training["train_loss"],
            training["train_error_pct"],
            val_error,
            epoch_seconds,
        )
        calls_epochs += 1
        if on_epoch is not None:
            on_epoch(metrics[-1])

    model.load_state_dict(best_weights)
    atomic_torch_save(run_dir / WEIGHTS, best_weights)
    evaluation = evaluate_model(model, config, mnist, device=device_)
    result = {
        **evaluation,
        "config_hash": identity,
        "seed": t.seed,
        "model": config.model.name,
        "epochs_run": state["epoch"],
        "epochs_budget": t.epochs,
        "time_budget_s": t.time_budget_s,
        "stopped_because": state["stopped"] or "epochs",
        "best_epoch": state["best_epoch"],
        "validation_error_pct": state["best_error"],
        "train_seconds": state["train_seconds"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device_),
        "torch_version": torch.__version__,
        "kernel": kernel_report(),  # which linear kernel ran, chosen by measurement on this CPU
        "git_revision": revision,
        "init_from_sha256": init_digest,
    }
    write_json(run_dir / RESULT, result)
    return result
