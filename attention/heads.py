"""Heads that read the core state h_t: classifier, baseline, and where-heads.

Where-heads decide where the reader looks next. Each returns a :class:`WhereSample`:
learned ``stochastic`` heads also give the log-probability of the where actually used (for REINFORCE);
deterministic heads give a differentiable where (for soft attention, trained by backprop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from attention import AttentionError
from attention.linear import Linear
from attention.registry import Registry

WHERE_HEADS = Registry("where policy")
BOUNDS = ("clamp", "none", "tanh")
# The first two where outputs are the centre (x, y) for every reader: the retina's location, the
# filterbank's (g~x, g~y).
CENTRE_DIMS = 2


@dataclass
class WhereSample:
    where: torch.Tensor  # (B, where_dim), what the reader is given
    mean: torch.Tensor  # (B, where_dim), the policy's mean (equal to where for deterministic heads)
    head: nn.Module | None = None  # the stochastic head that drew ``where``, else None

    @property
    def log_prob(self) -> torch.Tensor | None:
        """(B,) log pi(where | h) for a learned stochastic head, else None. Computed on request, so that
        ``unroll`` can compute it for all steps at once with ``head.log_prob``."""
        return None if self.head is None else self.head.log_prob(self.where, self.mean)


class Classifier(nn.Module):
    """RAM's action network for classification: a linear softmax layer (returns logits)."""

    def __init__(self, *, hidden_size: int, num_classes: int):
        super().__init__()
        self.linear = Linear(hidden_size, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


class ActionPolicy(nn.Module):
    """RAM's action network for a game (sec. 4.2): a linear softmax over the game's actions.

    It reads h_t undetached: in a game the only learning signal is REINFORCE, and through this head it
    trains the core and glimpse network (there is no classifier loss to do it).
    """

    def __init__(self, *, hidden_size: int, num_actions: int):
        super().__init__()
        self.linear = Linear(hidden_size, num_actions)

    def forward(
        self, h: torch.Tensor, *, sample: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(actions (B,) long, log pi(action | h) (B,), entropy of pi( . | h) (B,)): the action drawn from
        the softmax, or its most likely action when ``sample`` is False."""
        log_probs = torch.log_softmax(self.linear(h), dim=1)
        if sample:
            actions = torch.multinomial(log_probs.detach().exp(), 1, generator=generator).squeeze(1)
        else:
            actions = log_probs.argmax(dim=1)
        entropy = -(log_probs.exp() * log_probs).sum(dim=1)
        return actions, log_probs.gather(1, actions[:, None]).squeeze(1), entropy


class Baseline(nn.Module):
    """b_t = Linear(h_t), fitted to the return by squared error (RAM sec. 3, variance reduction)."""

    def __init__(self, *, hidden_size: int):
        super().__init__()
        self.linear = Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1)


@WHERE_HEADS.register("gaussian")
class GaussianWhereHead(nn.Module):
    """RAM's location network: l ~ N(mean(h), std^2 I) with a fixed std (sec. 4).

    With ``bound="clamp"`` the mean is tanh(Linear(h)) and the sample is clamped to [-1, 1]: the location
    follows a censored Gaussian, and the log-probability is that of the clamped location the reader actually
    uses (the density inside, the tail mass at a bound). With ``"none"`` the mean is Linear(h) and the sample
    is used as drawn. The sample itself carries no gradient: REINFORCE
    reaches the mean only through ``log_prob``.
    """

    stochastic = True

    def __init__(self, *, hidden_size: int, where_dim: int, std: float, bound: str, **_unused: object):
        super().__init__()
        if not std > 0:
            raise AttentionError(f"model.where.std must be > 0 for a Gaussian policy, got {std}")
        if bound not in BOUNDS:
            raise AttentionError(f"unknown model.where.bound '{bound}'; use one of {', '.join(BOUNDS)}")
        if bound == "tanh":
            raise AttentionError(
                "model.where.bound 'tanh' is for deterministic where-heads; a Gaussian policy uses 'clamp' "
                "(tanh mean, clamped sample) or 'none'"
            )
        self.linear = Linear(hidden_size, where_dim)
        self.std = std
        self.bound = bound

    def forward(self, h: torch.Tensor, *, sample: bool, generator: torch.Generator | None) -> WhereSample:
        mean = self.linear(h)
        if self.bound == "clamp":
            mean = torch.tanh(mean)
        where = mean.detach()
        if sample:
            where = where + self.std * torch.randn(
                mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
            )
        if self.bound == "clamp":
            where = where.clamp(-1.0, 1.0)
        return WhereSample(where=where, mean=mean, head=self)

    def log_prob(self, where: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log pi(where | mean), summed over the last dimension: (..., where_dim) -> (...).

        With ``bound="clamp"`` a coordinate at +-1 was clamped there, and a clamped coordinate follows a
        censored Gaussian: the bounds carry the whole tail mass, so its log-probability is log P(sample beyond
        the bound), not the density there (which would bias REINFORCE near the border).
        """
        log_density = (
            -((where - mean) ** 2) / (2 * self.std**2) - math.log(self.std) - 0.5 * math.log(2 * math.pi)
        )
        if self.bound == "clamp":
            log_density = torch.where(
                where >= 1.0, torch.special.log_ndtr((mean - 1.0) / self.std), log_density
            )
            log_density = torch.where(
                where <= -1.0, torch.special.log_ndtr((-1.0 - mean) / self.std), log_density
            )
        return log_density.sum(dim=-1)


@WHERE_HEADS.register("random")
class RandomWhereHead(nn.Module):
    """The random-glimpse baseline: locations uniform on [-1, 1]^2, ignoring h; nothing to learn."""

    stochastic = True

    def __init__(self, *, where_dim: int, **_unused: object):
        super().__init__()
        self.where_dim = where_dim

    def forward(self, h: torch.Tensor, *, sample: bool, generator: torch.Generator | None) -> WhereSample:
        where = uniform_locations(h.shape[0], self.where_dim, h.device, generator)
        return WhereSample(where=where, mean=where)


@WHERE_HEADS.register("deterministic")
class DeterministicWhereHead(nn.Module):
    """Soft attention's where-head: where = Linear(h), differentiable, trained by backprop.

    ``bound="tanh"`` squashes the centre (the first two outputs) into [-1, 1], so the window's centre stays
    on the image; the other outputs stay linear. ``"clamp"`` and ``"none"`` keep DRAW's purely linear head
    (a hard clamp would cut the gradient at the border). Why the option exists: a linear centre can drift
    off the image, where every filter reads the same border pixel, the read is constant and its gradient with
    respect to the centre vanishes, so the window never comes back (docs/readers.md).
    """

    stochastic = False

    def __init__(self, *, hidden_size: int, where_dim: int, bound: str = "none", **_unused: object):
        super().__init__()
        if bound not in BOUNDS:
            raise AttentionError(f"unknown model.where.bound '{bound}'; use one of {', '.join(BOUNDS)}")
        self.linear = Linear(hidden_size, where_dim)
        self.squash_centre = bound == "tanh"

    def forward(self, h: torch.Tensor, *, sample: bool, generator: torch.Generator | None) -> WhereSample:
        where = self.linear(h)
        if self.squash_centre:
            where = torch.cat([torch.tanh(where[:, :CENTRE_DIMS]), where[:, CENTRE_DIMS:]], dim=1)
        return WhereSample(where=where, mean=where)


def uniform_locations(
    batch: int, dim: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.rand(batch, dim, generator=generator, device=device) * 2 - 1
