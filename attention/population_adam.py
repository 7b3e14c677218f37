"""Adam for a population (attention/population.py): every trial's update in a few passes over one buffer.

It updates the (K, P) buffer that holds all K trials' parameters with a learning rate per trial, and
masks out a trial that has left (pruned or diverged) without touching its weights or moments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from attention import AttentionError

if TYPE_CHECKING:
    from attention.population import PopulationRAM


class PopulationAdam:
    """Adam (Kingma and Ba 2015, as ``torch.optim.Adam`` computes it) on a population's (K, P) buffer, with
    a learning rate per trial.

    Each trial's update is what ``torch.optim.Adam`` gives its model alone, up to float rounding: the same
    moments, and per trial ``lr_k / (1 - beta1^t_k)`` and ``sqrt(1 - beta2^t_k)`` computed in double as
    PyTorch's fused kernel does. ``step(active)`` updates only the trials in the boolean mask ``active``
    (K,): the others keep their weights, moments and step count exactly (a pruned or diverged trial, whose
    gradient may be NaN, is never touched).
    """

    def __init__(
        self,
        population: PopulationRAM,
        *,
        learning_rates: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if len(learning_rates) != population.size:
            raise AttentionError(
                f"a population of {population.size} needs {population.size} learning rates, "
                f"got {len(learning_rates)}"
            )
        self.population = population
        self.learning_rates = [float(lr) for lr in learning_rates]
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.steps = [0] * population.size
        self.exp_avg = torch.zeros_like(population.flat)
        self.exp_avg_sq = torch.zeros_like(population.flat)

    def zero_grad(self) -> None:
        for p in self.population.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: Sequence[bool]) -> None:
        """One Adam step with ``grad`` (K, P) (:meth:`PopulationRAM.flat_grad`, after any clipping)."""
        beta1, beta2 = self.betas
        flat = self.population.flat
        everyone = all(active)
        if not everyone:
            mask = torch.tensor(list(active), device=flat.device)[:, None]  # (K, 1)
            # an inactive trial's gradient may be NaN: zero it so its moments stay finite, then give it a
            # step of size 0 and keep its moments as they were
            grad = torch.where(mask, grad, torch.zeros((), device=flat.device))
        if self.weight_decay:
            grad = grad.add(flat, alpha=self.weight_decay)
        step_sizes, root_corrections = [], []
        for k, on in enumerate(active):
            if on:
                self.steps[k] += 1
            t = max(self.steps[k], 1)
            step_sizes.append(self.learning_rates[k] / (1 - beta1**t) if on else 0.0)
            root_corrections.append(math.sqrt(1 - beta2**t))
        step_size = torch.tensor(step_sizes, device=flat.device)[:, None]
        root_correction = torch.tensor(root_corrections, device=flat.device)[:, None]
        if everyone:  # the usual step: in place, a few passes over the (K, P) buffers
            self.exp_avg.lerp_(grad, 1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            self.exp_avg = torch.where(mask, self.exp_avg.lerp(grad, 1 - beta1), self.exp_avg)
            moved = self.exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            self.exp_avg_sq = torch.where(mask, moved, self.exp_avg_sq)
        denom = self.exp_avg_sq.sqrt().div_(root_correction).add_(self.eps)
        flat.addcdiv_(self.exp_avg * step_size, denom, value=-1.0)

    def trial_state(self, k: int) -> dict[str, object]:
        """Trial k's moments, per parameter of the single model, and its step count."""
        sizes = [p[0].numel() for p in self.population.params]
        shapes = [tuple(p.shape[1:]) for p in self.population.params]
        moments = []
        for buffer in (self.exp_avg, self.exp_avg_sq):
            parts = torch.split(buffer[k], sizes)
            moments.append([part.reshape(shape).clone() for part, shape in zip(parts, shapes, strict=True)])
        return {"step": self.steps[k], "exp_avg": moments[0], "exp_avg_sq": moments[1]}

    def load_trial_state(self, k: int, state: dict[str, object]) -> None:
        self.steps[k] = int(state["step"])  # type: ignore[arg-type]
        for buffer, parts in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            buffer[k] = torch.cat([part.reshape(-1) for part in parts])  # type: ignore[union-attr]
