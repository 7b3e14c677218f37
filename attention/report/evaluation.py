"""The study protocol's evaluation: a model's test error over several evaluation draws, cached per run.

One evaluation pass is itself a sample: a retina's first glimpse is random, so even the error with the
policy's mean locations depends on the evaluation's random draws. A study evaluates each model ``draws``
times, draw k with a generator seeded ``test_seed + SAMPLING_SEED_OFFSET + k`` (draw 0 is the pass of
``result.json``'s ``test_error_pct``), and reports the mean and spread of the draws' errors. Separately, and
labelled so, it reports the error of the predictions averaged over the draws (the mean of the softmax
outputs, as tfRAM's M = 10 Monte Carlo samples).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attention.evaluate import load_trained
from attention.runs import RESULT, WEIGHTS, read_json, weights_digest, write_json

CACHE_VERSION = 1


def evaluation_cache_dir(runs_dir: Path) -> Path:
    """Where the evaluations of the runs in ``runs_dir`` are cached: beside it, one file per run, shared by
    every study that cites the run (a run in three tables is evaluated once, not three times)."""
    return Path(runs_dir).parent / "evaluations"


@torch.no_grad()
def evaluate_draws(
    model: torch.nn.Module, dataset, *, draws: int, seed: int, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Errors (%) of ``draws`` passes with mean locations, the error of their averaged predictions, and
    which images draw 0 classified correctly (for paired tests)."""
    model.eval()
    errors, probabilities, first_correct = [], None, None
    for draw in range(draws):
        generator = torch.Generator(device=device).manual_seed(seed + draw)
        untouched = generator.get_state()
        outputs, correct = [], []
        for images, labels in dataset.batches(batch_size, device):
            logits = model.unroll(images, sample=False, generator=generator).logits
            outputs.append(torch.softmax(logits, dim=1).cpu())
            correct.append((logits.argmax(dim=1) == labels).cpu())
        correct = torch.cat(correct)
        errors.append(100.0 * int((~correct).sum()) / len(correct))
        draw_probabilities = torch.cat(outputs)
        probabilities = draw_probabilities if probabilities is None else probabilities + draw_probabilities
        if first_correct is None:
            first_correct = correct
        if torch.equal(generator.get_state(), untouched):
            # the model drew no random numbers (no random first glimpse, no sampling): every draw would
            # repeat this one exactly, so count it for all of them instead of recomputing it
            errors = errors * draws
            probabilities = probabilities * draws
            break
    averaged = 100.0 * int((probabilities.argmax(dim=1) != dataset.labels).sum()) / len(dataset.labels)
    return {"errors_pct": errors, "averaged_error_pct": averaged, "first_correct": first_correct.numpy()}


def _pack(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def unpack(text: str, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:count].astype(bool)


def single_pass_without_weights(run_dir: Path, test_seed: int) -> dict[str, Any] | None:
    """For a run whose weights were not kept (a probe): the single pass its result.json recorded on its own
    test set, marked so; None for any other test set, which cannot be measured without weights."""
    result = read_json(run_dir / RESULT)
    if result.get("protocol", {}).get("test_seed", result.get("data", {}).get("test_seed")) != test_seed:
        return None
    return {
        "test_seed": test_seed,
        "n_test": result["n_test"],
        "draws": 1,
        "errors_pct": [result["test_error_pct"]],
        "mean_error_pct": result["test_error_pct"],
        "draw_sd_pct": None,
        "averaged_error_pct": None,
        "first_draw_correct": None,
        "weights_kept": False,
    }


def run_evaluation(
    run_dir: Path,
    *,
    test_seed: int | None,
    draws: int,
    cache_dir: Path,
    data_dir: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The protocol's numbers for one run on one test set (``test_seed`` None: the run's own), from the
    cache in ``cache_dir`` when it holds them for these weights, else measured from the weights and cached."""
    from attention.build import pick_device
    from attention.runs import load_run_config
    from attention.tasks import TASKS

    config = load_run_config(run_dir)
    data = config.data if test_seed is None else dataclasses.replace(config.data, test_seed=test_seed)
    key = f"test seed {data.test_seed}, {draws} draws"
    if not (Path(run_dir) / WEIGHTS).is_file():
        return single_pass_without_weights(Path(run_dir), data.test_seed)
    cache = cache_dir / f"{Path(run_dir).name}.json"
    stored = read_json(cache) if cache.is_file() else {}
    digest = weights_digest(run_dir)
    # entries of another cache version were measured another way, and entries of other weights (a run
    # trained further, or another run of that name in another runs folder) measured another model:
    # neither is used nor carried over
    current = stored.get("version") == CACHE_VERSION and stored.get("weights_sha256") == digest
    kept = stored.get("evaluations", {}) if current else {}
    if key in kept:
        return kept[key]
    device_ = pick_device(device)
    model, config = load_trained(run_dir, device_)
    # what a draw is, and what counts as an error, is the task's (a test image, or a game missed)
    task = TASKS.get(config.data.task)(config, data_dir=data_dir, device=device_)
    measured = task.evaluation_draws(model, test_seed=data.test_seed, draws=draws)
    entry = {
        "test_seed": data.test_seed,
        "n_test": measured["n"],
        "draws": draws,
        "errors_pct": measured["errors_pct"],
        "mean_error_pct": float(np.mean(measured["errors_pct"])),
        "draw_sd_pct": float(np.std(measured["errors_pct"], ddof=1)) if draws > 1 else 0.0,
        "averaged_error_pct": measured["averaged_error_pct"],
        "first_draw_correct": _pack(measured["first_correct"]),
    }
    stored = {"version": CACHE_VERSION, "run": str(run_dir), "weights_sha256": digest, "evaluations": kept}
    stored["evaluations"][key] = entry
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(cache, stored)
    return entry
