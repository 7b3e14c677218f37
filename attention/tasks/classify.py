"""Classification on MNIST, translated and cluttered MNIST (RAM sec. 4.1) as a task.

A batch is images and labels drawn afresh every epoch; a rollout becomes RAM's hybrid loss; the best
weights are those of the lowest validation error (mean locations); the test error is measured once, with
the policy's mean locations and with sampled ones, reported apart.

Evaluation protocol (recorded with every result): the fixed test set of the run's task for ``test_seed``;
"mean" follows the location policy's means (deterministic); "sampled" draws locations as in training, over
``eval.sampled_repeats`` passes with a generator seeded from the test seed, and reports their mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from attention.compiling import training_unroll
from attention.config import Config
from attention.data.mnist import Mnist, load_mnist
from attention.data.tasks import FixedSet, TrainingStream, fixed_set, resolve, to_float
from attention.losses import LossTerms, hybrid
from attention.tasks import EVALUATION_SEED_OFFSET

SAMPLING_SEED_OFFSET = EVALUATION_SEED_OFFSET  # the sampled evaluation's locations


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


class ClassifyTask:
    """Image classification (tasks ``mnist``, ``translated``, ``cluttered``); see the module docstring."""

    selection_metric = "val_error_pct"  # the metrics row's validation number
    selection_label = "validation error"  # what a search minimises, as its reports name it (in %)
    report_command = "glimpses"  # glimpse paths on test images; test errors in `attention report table`

    def __init__(
        self,
        config: Config,
        *,
        data_dir: str | Path | None,
        device: torch.device,
        mnist: Mnist | None = None,
    ):
        self.config = config
        self.data_dir = data_dir
        self.device = device
        # the training order, placements and clutter: a stream of its own, saved in every checkpoint
        self.data_generator = torch.Generator().manual_seed(config.train.seed)
        self._mnist = (
            mnist  # given when many tasks share it (a population's trials), else loaded on first use
        )
        self._stream: TrainingStream | None = None
        self._validation: FixedSet | None = None

    @staticmethod
    def resolve(config: Config) -> Config:
        return dataclasses.replace(config, data=resolve(config.data))

    @staticmethod
    def model_shape(config: Config) -> dict[str, Any]:
        size = config.data.canvas_size
        return {"image_size": (size, size)}

    @property
    def mnist(self) -> Mnist:
        if self._mnist is None:
            self._mnist = load_mnist(self.data_dir)
        return self._mnist

    @property
    def stream(self) -> TrainingStream:
        if self._stream is None:
            self._stream = TrainingStream(self.mnist, self.config.data, self.data_generator)
        return self._stream

    @property
    def num_epochs(self) -> int:
        return self.config.train.epochs

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.stream) / self.config.train.batch_size)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.stream.epoch(self.config.train.batch_size)

    def trainer(self, model: torch.nn.Module) -> Callable[..., tuple[LossTerms, int]]:
        t = self.config.train
        unroll = training_unroll(model, self.config)  # made once: a compiled graph lives across epochs

        def step(
            batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
        ) -> tuple[LossTerms, int]:
            images, labels = to_float(batch[0], self.device), batch[1].to(self.device)
            rollout = unroll(images, generator)
            terms = hybrid(
                rollout, labels, reinforce_weight=t.reinforce_weight, baseline_weight=t.baseline_weight
            )
            return terms, labels.shape[0]

        return step

    @staticmethod
    def epoch_metrics(training: dict[str, float], epochs_done: int | None = None) -> dict[str, float]:
        """An epoch's metrics row from the trainer's averages (a population's trials use it too)."""
        return {
            "lr": training["lr"],
            "train_loss": training["loss"],
            "cross_entropy": training["cross_entropy"],
            "reinforce": training["reinforce"],
            "baseline_mse": training["baseline"],
            "mean_reward": training["reward"],
            "train_error_pct": training["error_pct"],
            "train_images_per_s": training["per_s"],
        }

    def validate(self, model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        """Validation error (mean locations; a random first glimpse from the validation seed's stream)."""
        if self._validation is None:
            self._validation = fixed_set(self.mnist, self.config.data, "validation")
        error = error_pct(
            model,
            self._validation,
            sample=False,
            batch_size=self.config.train.eval_batch_size,
            device=self.device,
            generator=torch.Generator(device=self.device).manual_seed(self.config.data.validation_seed),
        )
        return error, {"val_error_pct": error}

    @staticmethod
    def selection_result(best: float) -> dict[str, float]:
        return {"validation_error_pct": best}

    @staticmethod
    def result_selection(result: dict[str, Any]) -> float:
        return float(result["validation_error_pct"])

    @staticmethod
    def epoch_selection(row: dict[str, Any]) -> float:
        return float(row["val_error_pct"])

    @staticmethod
    def selection_percent(selection: float) -> float:
        return selection

    def evaluate(self, model: torch.nn.Module, test_seed: int | None = None) -> dict[str, Any]:
        return evaluate_model(model, self.config, self.mnist, device=self.device, test_seed=test_seed)

    def evaluation_draws(self, model: torch.nn.Module, *, test_seed: int, draws: int) -> dict[str, Any]:
        """A study's evaluation (attention/report/evaluation.py): ``draws`` passes over the test set of
        ``test_seed`` with mean locations, draw k's randomness seeded ``test_seed + SAMPLING_SEED_OFFSET + k``
        (draw 0 is result.json's pass)."""
        from attention.report.evaluation import evaluate_draws

        test = fixed_set(self.mnist, dataclasses.replace(self.config.data, test_seed=test_seed), "test")
        measured = evaluate_draws(
            model,
            test,
            draws=draws,
            seed=test_seed + SAMPLING_SEED_OFFSET,
            batch_size=self.config.train.eval_batch_size,
            device=self.device,
        )
        return {**measured, "n": len(test.labels)}

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        return (
            f"{result['task']}: test error {result['test_error_pct']:.2f}% (mean locations), "
            f"{result['test_error_sampled_pct']:.2f}% (sampled), n_test {result['n_test']}, "
            f"test seed {result['protocol']['test_seed']}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"data_generator": self.data_generator.get_state()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.data_generator.set_state(saved["data_generator"])
