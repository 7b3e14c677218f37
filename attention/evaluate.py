"""Evaluation: test error with the policy's mean locations and with sampled locations, reported apart.

Protocol (recorded with every result): the fixed test set of the run's task for ``test_seed``; "mean"
follows the location policy's means (deterministic); "sampled" draws locations as in training, over
``eval.sampled_repeats`` passes with a generator seeded from the test seed, and reports their mean.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from attention.config import Config
from attention.data.mnist import Mnist, load_mnist
from attention.data.tasks import FixedSet, fixed_set
from attention.runs import WEIGHTS, load_run_config, safe_load

# Offset between the test seed and the seed of the sampled-evaluation generator, so the two never share a
# stream by accident.
SAMPLING_SEED_OFFSET = 7919


@torch.no_grad()
def error_pct(
    model: torch.nn.Module,
    dataset: FixedSet,
    *,
    sample: bool,
    generator: torch.Generator,
    batch_size: int,
    device: torch.device,
) -> float:
    """Percentage of ``dataset`` misclassified by ``model`` (one pass).

    ``generator`` supplies any randomness (a random first glimpse; sampled locations when ``sample``), so
    the result is a fixed function of the model, the set and the generator's seed.
    """
    was_training = model.training
    model.eval()
    wrong = 0
    for images, labels in dataset.batches(batch_size, device):
        rollout = model.unroll(images, sample=sample, generator=generator)
        wrong += (rollout.logits.argmax(dim=1) != labels).sum().item()
    model.train(was_training)
    return 100.0 * wrong / len(dataset.labels)


def evaluate_model(
    model: torch.nn.Module,
    config: Config,
    mnist: Mnist,
    *,
    device: torch.device,
    test_seed: int | None = None,
) -> dict[str, Any]:
    data = config.data if test_seed is None else dataclasses.replace(config.data, test_seed=test_seed)
    test = fixed_set(mnist, data, "test")
    batch = config.train.eval_batch_size
    generator = torch.Generator(device=device).manual_seed(data.test_seed + SAMPLING_SEED_OFFSET)
    mean_error = error_pct(model, test, sample=False, generator=generator, batch_size=batch, device=device)
    repeats = config.eval.sampled_repeats
    sampled = [
        error_pct(model, test, sample=True, generator=generator, batch_size=batch, device=device)
        for _ in range(repeats)
    ]
    return {
        "task": data.task,
        "data": dataclasses.asdict(data),
        "n_test": len(test.labels),
        "test_error_pct": mean_error,
        "test_error_sampled_pct": sum(sampled) / repeats,
        "protocol": {
            "split": "test",
            "test_seed": data.test_seed,
            "weights": "best validation epoch",
            "test_error_pct": "policy mean locations (first glimpse as configured in model.where.initial, "
            "drawn from the sampling generator when random)",
            "test_error_sampled_pct": f"locations sampled from the policy, mean of {repeats} pass(es)",
        },
    }


def load_trained(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """The run's model with its saved (best validation) weights, loaded weights-only."""
    from attention.train import make_model

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    model = make_model(config, device)
    model.load_state_dict(safe_load(run_dir / WEIGHTS, map_location=device))
    model.eval()
    return model, config


def evaluate_run(
    run_dir: str | Path,
    *,
    test_seed: int | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Re-derive a run's test errors from its config and weights (optionally on another test seed)."""
    from attention.train import pick_device

    device_ = pick_device(device)
    model, config = load_trained(run_dir, device_)
    return evaluate_model(model, config, load_mnist(data_dir), device=device_, test_seed=test_seed)
