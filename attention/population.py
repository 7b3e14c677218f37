"""A population: K recurrent attention models (RAM) trained as one, each layer one batched product.

Why: the trials of a search are small models that differ only in a few settings (the learning rate, the
location policy's std, the seed). One of them leaves a GPU almost idle, and on a CPU the fixed cost of each
operation is a large part of a step at batch 128. Stacking K of them makes every operation K times larger
at about the cost of one.

* **Stacked parameters.** Every parameter of the K models is one tensor with a leading trial dimension K:
  a linear layer's weight is (K, out, in) and the layer is one ``baddbmm`` over (K, B, in) inputs. All
  parameters are views into one (K, P) buffer, so the optimizer updates every layer of every trial in a
  handful of operations (attention/population_adam.py). The reader has no parameters: it reads the K x B
  images of all trials in one call.
* **Per-trial settings** are tensors: the location std here, the learning rate in the optimizer. Each
  trial draws its first locations and its location noise from its own generator, in the order its model
  alone draws them, so a trial's random stream is the one it has when trained alone.
* **Same result as alone.** A population is built from K ordinary models (:meth:`PopulationRAM.from_models`)
  and gives each trial's weights back as that model's state dict (:meth:`PopulationRAM.trial_state`); the
  batched products round like the per-trial ones, so a population ends where its trials end alone up to
  float rounding (tests/test_population.py).

Shapes: images (K, B, C, H, W); every per-trial stack has K first: logits (K, B, classes), where
(K, T, B, where_dim), log-probabilities and baselines (K, S, B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attention import AttentionError
from attention.cores import LSTMCore, RectifierRNN
from attention.heads import CENTRE_DIMS, DeterministicWhereHead, GaussianWhereHead, RandomWhereHead
from attention.model import RecurrentAttentionModel, Rollout


@dataclass
class PopulationRollout:
    """What one pass of a population produced; K = trials, T = glimpses, S = policy steps, B = batch."""

    logits: torch.Tensor  # (K, B, classes)
    where: torch.Tensor  # (K, T, B, where_dim)
    where_mean: torch.Tensor  # (K, T, B, where_dim)
    log_probs: torch.Tensor  # (K, S, B)
    baselines: torch.Tensor  # (K, S, B)

    def trial(self, k: int) -> Rollout:
        """Trial k's part as the :class:`Rollout` its model alone returns (time-major)."""
        return Rollout(
            logits=self.logits[k],
            where=self.where[k],
            where_mean=self.where_mean[k],
            log_probs=self.log_probs[k],
            baselines=self.baselines[k],
        )


@dataclass
class PopulationLoss:
    """The hybrid loss of each trial (attention.losses.hybrid), every field (K,)."""

    total: torch.Tensor
    cross_entropy: torch.Tensor
    reinforce: torch.Tensor
    baseline: torch.Tensor
    reward: torch.Tensor
    errors: torch.Tensor


def hybrid_per_trial(
    rollout: PopulationRollout, labels: torch.Tensor, *, reinforce_weight: float, baseline_weight: float
) -> PopulationLoss:
    """:func:`attention.losses.hybrid` for every trial at once; ``labels`` (K, B). Each trial's total
    depends only on its own rollout, so the gradient of the sum of totals is each trial's own gradient."""
    k, b, classes = rollout.logits.shape
    returns = (rollout.logits.argmax(dim=2) == labels).to(rollout.logits.dtype)  # (K, B)
    cross_entropy = F.cross_entropy(
        rollout.logits.reshape(k * b, classes), labels.reshape(k * b), reduction="none"
    ).view(k, b)
    cross_entropy = cross_entropy.mean(dim=1)
    if rollout.log_probs.shape[1] == 0:
        policy = base = rollout.logits.new_zeros(k)
    else:
        # RAM eq. (2) with R - b_t held constant, as in attention.losses.reinforce
        advantage = (returns[:, None, :] - rollout.baselines).detach()  # (K, S, B)
        policy = -(rollout.log_probs * advantage).sum(dim=1).mean(dim=1)
        base = ((rollout.baselines - returns[:, None, :]) ** 2).mean(dim=(1, 2))
    return PopulationLoss(
        total=cross_entropy + reinforce_weight * policy + baseline_weight * base,
        cross_entropy=cross_entropy,
        reinforce=policy,
        baseline=base,
        reward=returns.mean(dim=1),
        errors=(1 - returns).sum(dim=1),
    )


def _stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (K, B, in) @ weight (K, out, in)^T + bias (K, out) -> (K, B, out): one batched product. It rounds
    as the per-trial ``F.linear`` (bias added by the product, beta = 1), checked in the tests."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class PopulationRAM(nn.Module):
    """K recurrent attention models of one architecture as one module (see the module docstring).

    Build it with :meth:`from_models`. The trials must have the same architecture; they may differ in their
    weights, their location std (``std``, (K,)) and their random streams (the generators passed to
    :meth:`unroll`).
    """

    def __init__(self, models: Sequence[RecurrentAttentionModel]):
        super().__init__()
        if not models:
            raise AttentionError("a population needs at least one model")
        first = models[0]
        for model in models:
            if not isinstance(model, RecurrentAttentionModel):
                raise AttentionError(f"a population stacks RAM models, not {type(model).__name__}")
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
        if any(s != shapes[0] for s in shapes):
            raise AttentionError("the models of a population must have the same architecture")
        if [n for n, _ in first.named_parameters()] != list(first.state_dict()):
            raise AttentionError("a population stacks models whose state is their parameters only")
        configs = [m.config for m in models]
        for config in configs:
            # the std is a per-trial tensor; everything else decides the computation and must agree
            if _without_std(config) != _without_std(first.config):
                raise AttentionError(
                    "the models of a population may differ only in model.where.std, got "
                    f"{_without_std(config)} and {_without_std(first.config)}"
                )
        if not isinstance(first.core, (RectifierRNN, LSTMCore)):
            raise AttentionError(f"a population has no stacked form of core {type(first.core).__name__}")
        self.config = first.config
        self.size = len(models)
        self.num_glimpses = first.num_glimpses
        self.reader = first.reader  # no parameters: one reader serves every trial
        self.where_dim = first.reader.where_dim
        self.hidden_size = first.config.core.hidden_size
        self.lstm = isinstance(first.core, LSTMCore)
        self.head = type(first.where_head)
        self.learns_by_reinforce = first.learns_by_reinforce
        self.bound = first.config.where.bound
        if self.head not in (GaussianWhereHead, DeterministicWhereHead, RandomWhereHead):
            raise AttentionError(f"a population has no stacked form of where-head {self.head.__name__}")
        stds = [m.config.where.std for m in models]
        # per-trial std and the constants of its log-density, each rounded to float32 from the same double
        # as the single head's Python float is, so both compute alike
        device = _device(first)
        self.std = torch.tensor(stds, device=device)
        self.two_variance = torch.tensor([2 * s**2 for s in stds], device=device)
        self.log_std = torch.tensor([math.log(s) if s > 0 else 0.0 for s in stds], device=device)
        # every parameter of every trial lives in one (K, P) buffer: the optimizer's few operations on it
        # update all layers of all trials (PopulationAdam)
        self.names = [name for name, _ in first.named_parameters()]
        sizes = [p.numel() for p in first.parameters()]
        flat = torch.cat([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models]).view(
            len(models), sum(sizes)
        )
        self.flat = flat
        self.params = nn.ParameterList()
        offset = 0
        for size, parameter in zip(sizes, first.parameters(), strict=True):
            stacked = nn.Parameter(torch.empty(0, device=flat.device))
            # a (K, *shape) view into the buffer (strides (P, ...)): updating the buffer updates it
            stacked.data = flat[:, offset : offset + size].view(len(models), *parameter.shape)
            self.params.append(stacked)
            offset += size
        self._index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_models(cls, models: Sequence[RecurrentAttentionModel]) -> PopulationRAM:
        """A population whose trial k starts with ``models[k]``'s weights and location std."""
        return cls(models)

    def parameter(self, name: str) -> torch.Tensor:
        """The stacked (K, *shape) parameter named as in the single model's state dict."""
        return self.params[self._index[name]]

    def trial_state(self, k: int) -> dict[str, torch.Tensor]:
        """Trial k's weights as its single model's state dict (copies)."""
        return {name: p[k].detach().clone() for name, p in zip(self.names, self.params, strict=True)}

    def flat_grad(self) -> torch.Tensor:
        """The gradients of every trial as one (K, P) tensor, zeros where a parameter got none."""
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(self.size, -1)
                for p in self.params
            ],
            dim=1,
        )

    # -- the layers ---------------------------------------------------------------------------------------

    def _linear(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        return _stacked_linear(x, self.parameter(prefix + ".weight"), self.parameter(prefix + ".bias"))

    def _glimpse(self, rho: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        # RAM sec. 4: g = Rect(Linear(h_g) + Linear(h_l)), as attention.model.GlimpseNetwork
        h_g = torch.relu(self._linear("glimpse_network.image", rho))
        h_l = torch.relu(self._linear("glimpse_network.location", where))
        return torch.relu(
            self._linear("glimpse_network.image_out", h_g) + self._linear("glimpse_network.location_out", h_l)
        )

    def _initial_state(self, batch: int, device: torch.device) -> object:
        zeros = torch.zeros(self.size, batch, self.hidden_size, device=device)
        return (zeros, zeros.clone()) if self.lstm else zeros

    def _hidden(self, state: object) -> torch.Tensor:
        return state[0] if self.lstm else state  # type: ignore[index]

    def _core_step(self, g: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        if not self.lstm:  # RAM sec. 4: h_t = Rect(Linear(h_{t-1}) + Linear(g_t))
            h = torch.relu(
                self._linear("core.input_to_hidden", g) + self._linear("core.hidden_to_hidden", state)
            )
            return h, h
        h, c = state  # type: ignore[misc]
        gates = _stacked_linear(g, self.parameter("core.cell.weight_ih"), self.parameter("core.cell.bias_ih"))
        gates = gates + _stacked_linear(
            h, self.parameter("core.cell.weight_hh"), self.parameter("core.cell.bias_hh")
        )
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=2)
        c = torch.sigmoid(forget_gate) * c + torch.sigmoid(input_gate) * torch.tanh(candidate)
        h = torch.sigmoid(output_gate) * torch.tanh(c)
        return h, (h, c)

    def _uniform(self, batch: int, device: torch.device, generators: Sequence[torch.Generator | None]):
        # each trial's draw from its own generator, as its model alone draws it (heads.uniform_locations)
        return torch.stack(
            [torch.rand(batch, self.where_dim, generator=g, device=device) * 2 - 1 for g in generators]
        )

    def _where(
        self, h: torch.Tensor, *, sample: bool, generators: Sequence[torch.Generator | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(where, mean), each (K, B, where_dim): the where-head of every trial on h (K, B, hidden)."""
        if self.head is RandomWhereHead:
            where = self._uniform(h.shape[1], h.device, generators)
            return where, where
        if self.head is DeterministicWhereHead:
            where = self._linear("where_head.linear", h)
            if self.bound == "tanh":
                where = torch.cat([torch.tanh(where[..., :CENTRE_DIMS]), where[..., CENTRE_DIMS:]], dim=2)
            return where, where
        # GaussianWhereHead; unless routing.reinforce_reaches_core it reads a detached h (model.next_where)
        if not self.config.routing.reinforce_reaches_core:
            h = h.detach()
        mean = self._linear("where_head.linear", h)
        if self.bound == "clamp":
            mean = torch.tanh(mean)
        where = mean.detach()
        if sample:
            noise = torch.stack(
                [
                    torch.randn(mean.shape[1:], generator=g, device=mean.device, dtype=mean.dtype)
                    for g in generators
                ]
            )
            where = where + self.std[:, None, None] * noise
        if self.bound == "clamp":
            where = where.clamp(-1.0, 1.0)
        return where, mean

    def _log_prob(self, where: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """GaussianWhereHead.log_prob with each trial's std: (K, S, B, where_dim) -> (K, S, B)."""
        std = self.std[:, None, None, None]
        log_density = (
            -((where - mean) ** 2) / self.two_variance[:, None, None, None]
            - self.log_std[:, None, None, None]
            - 0.5 * math.log(2 * math.pi)
        )
        if self.bound == "clamp":  # a clamped coordinate carries the tail mass (censored Gaussian)
            log_density = torch.where(where >= 1.0, torch.special.log_ndtr((mean - 1.0) / std), log_density)
            log_density = torch.where(where <= -1.0, torch.special.log_ndtr((-1.0 - mean) / std), log_density)
        return log_density.sum(dim=-1)

    # -- the one unroll ---------------------------------------------------------------------------------

    def unroll(
        self,
        images: torch.Tensor,
        *,
        sample: bool = True,
        generators: Sequence[torch.Generator | None],
    ) -> PopulationRollout:
        """All glimpses of every trial on its images (K, B, C, H, W); trial k draws from ``generators[k]``.
        Mirrors :meth:`RecurrentAttentionModel.unroll` step by step."""
        if images.dim() != 5 or images.shape[0] != self.size:
            raise AttentionError(
                f"a population of {self.size} unrolls images (K={self.size}, B, C, H, W), "
                f"got {tuple(images.shape)}"
            )
        if len(generators) != self.size:
            raise AttentionError(
                f"a population of {self.size} needs {self.size} generators, got {len(generators)}"
            )
        k, batch = images.shape[:2]
        flat_images = images.reshape(k * batch, *images.shape[2:])  # (K*B, C, H, W): one read for all
        state = self._initial_state(batch, images.device)
        if self.head is DeterministicWhereHead:
            where, _ = self._where(self._hidden(state), sample=sample, generators=generators)
        elif self.config.where.initial == "center":
            where = torch.zeros(k, batch, self.where_dim, device=images.device)
        else:
            where = self._uniform(batch, images.device, generators)
        wheres, means, policy_states = [where], [where], []
        for t in range(self.num_glimpses):
            rho = self.reader(flat_images, where.reshape(k * batch, self.where_dim)).view(k, batch, -1)
            h, state = self._core_step(self._glimpse(rho, where), state)
            if t == self.num_glimpses - 1:
                break
            where, mean = self._where(h, sample=sample, generators=generators)
            wheres.append(where)
            means.append(mean)
            if self.learns_by_reinforce:
                policy_states.append(h)
        last_h = h
        where, where_mean = torch.stack(wheres, dim=1), torch.stack(means, dim=1)  # (K, T, B, where_dim)
        log_probs = baselines = images.new_zeros((k, 0, batch))
        if policy_states:
            log_probs = self._log_prob(where[:, 1:], where_mean[:, 1:])  # (K, S, B)
            stacked = torch.stack(policy_states, dim=1)  # (K, S, B, hidden)
            # the baseline reads a detached h_t unless routing.baseline_reaches_core (model.value)
            if not self.config.routing.baseline_reaches_core:
                stacked = stacked.detach()
            steps = stacked.shape[1]
            rows = stacked.reshape(k, steps * batch, self.hidden_size)  # (K, S*B, hidden)
            baselines = self._linear("baseline.linear", rows).view(k, steps, batch)
        return PopulationRollout(
            logits=self._linear("classifier.linear", last_h),
            where=where,
            where_mean=where_mean,
            log_probs=log_probs,
            baselines=baselines,
        )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _without_std(config):
    import dataclasses

    return dataclasses.replace(config, where=dataclasses.replace(config.where, std=0.0))
