"""The recurrent attention model: reader + glimpse network + core + heads, with one ``unroll``.

Training, evaluation, search and figures all consume the :class:`Rollout` that ``unroll`` returns; the loss
functions in :mod:`attention.losses` are pure functions of it. A game agent reuses ``first_where``,
``step`` and ``next_where``, the pieces ``unroll`` is made of.
"""

from __future__ import annotations

import torch
from torch import nn

from attention import AttentionError
from attention.config import ModelConfig
from attention.cores import CORES
from attention.heads import WHERE_HEADS, ActionPolicy, Baseline, Classifier, WhereSample, uniform_locations
from attention.linear import Linear
from attention.readers import READERS
from attention.registry import Registry
from attention.rollout import Rollout

INITIAL_WHERE = ("random", "center")
MAX_GLIMPSES = 64


class GlimpseNetwork(nn.Module):
    """RAM sec. 4: g = Rect(Linear(h_g) + Linear(h_l)), h_g = Rect(Linear(rho)), h_l = Rect(Linear(l))."""

    def __init__(
        self, *, reader_dim: int, where_dim: int, image_hidden: int, location_hidden: int, output_size: int
    ):
        super().__init__()
        self.image = Linear(reader_dim, image_hidden)
        self.location = Linear(where_dim, location_hidden)
        self.image_out = Linear(image_hidden, output_size)
        self.location_out = Linear(location_hidden, output_size)

    def forward(self, rho: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        h_g = torch.relu(self.image(rho))
        h_l = torch.relu(self.location(where))
        return torch.relu(self.image_out(h_g) + self.location_out(h_l))


class RecurrentAttentionModel(nn.Module):
    """RAM (Mnih et al. 2014) with a pluggable reader: the retina (hard) or the filterbank (soft)."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        image_size: tuple[int, int],
        channels: int = 1,
        num_classes: int = 10,
        num_actions: int | None = None,
    ):
        """``num_actions`` set: an agent for a game, with a linear softmax action head (``action_policy``)
        on the core state in place of the classifier."""
        super().__init__()
        if not 1 <= config.num_glimpses <= MAX_GLIMPSES:
            raise AttentionError(
                f"model.num_glimpses must be in 1..{MAX_GLIMPSES}, got {config.num_glimpses}"
            )
        if config.where.initial not in INITIAL_WHERE:
            raise AttentionError(
                f"unknown model.where.initial '{config.where.initial}'; use one of "
                + ", ".join(INITIAL_WHERE)
            )
        for name, size in [
            ("glimpse.image_hidden", config.glimpse.image_hidden),
            ("glimpse.location_hidden", config.glimpse.location_hidden),
            ("glimpse.output_size", config.glimpse.output_size),
            ("core.hidden_size", config.core.hidden_size),
        ]:
            if size < 1:
                raise AttentionError(f"model.{name} must be >= 1, got {size}")
        reader_cls = READERS.get(config.reader.name)
        head_cls = WHERE_HEADS.get(config.where.policy)
        _check_pairing(
            config.reader.name, reader_cls.differentiable, config.where.policy, head_cls.stochastic
        )
        self.config = config
        self.num_glimpses = config.num_glimpses
        self.reader = reader_cls(
            image_size=image_size,
            channels=channels,
            patch_size=config.reader.patch_size,
            num_scales=config.reader.num_scales,
            grid_size=config.reader.grid_size,
        )
        where_dim = self.reader.where_dim
        g = config.glimpse
        self.glimpse_network = GlimpseNetwork(
            reader_dim=self.reader.out_dim,
            where_dim=where_dim,
            image_hidden=g.image_hidden,
            location_hidden=g.location_hidden,
            output_size=g.output_size,
        )
        self.core = CORES.build(
            config.core.name, input_size=g.output_size, hidden_size=config.core.hidden_size
        )
        self.where_head = head_cls(
            hidden_size=config.core.hidden_size,
            where_dim=where_dim,
            std=config.where.std,
            bound=config.where.bound,
        )
        if not self.where_head.stochastic and hasattr(self.reader, "initial_where"):
            with torch.no_grad():
                self.where_head.linear.bias.copy_(self.reader.initial_where())
        # The action network of RAM: a classifier for an image task, a game-action policy for a game
        self.classifier = self.action_policy = None
        if num_actions is None:
            self.classifier = Classifier(hidden_size=config.core.hidden_size, num_classes=num_classes)
        else:
            self.action_policy = ActionPolicy(hidden_size=config.core.hidden_size, num_actions=num_actions)
        # Only a learned stochastic policy needs a baseline for REINFORCE; a game's action policy always does.
        self.learns_by_reinforce = head_cls.stochastic and config.where.policy != "random"
        needs_baseline = self.learns_by_reinforce or num_actions is not None
        self.baseline = Baseline(hidden_size=config.core.hidden_size) if needs_baseline else None

    # -- the pieces of one unroll ------------------------------------------------------------------------

    def first_where(
        self, state: object, batch: int, *, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Where the first glimpse looks: from the initial state for soft attention; for a retina random
        (uniform, as in the paper) or the centre, per ``where.initial``."""
        device = self.core.hidden(state).device
        if not self.where_head.stochastic:
            return self.where_head(self.core.hidden(state), sample=sample, generator=generator).where
        if self.config.where.initial == "center":
            return torch.zeros(batch, self.reader.where_dim, device=device)
        return uniform_locations(batch, self.reader.where_dim, device, generator)

    def step(self, images: torch.Tensor, where: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """Read at ``where``, update the core: returns (h_t, new state)."""
        g = self.glimpse_network(self.reader(images, where), where)
        return self.core.step(g, state)

    def next_where(self, h: torch.Tensor, *, sample: bool, generator: torch.Generator | None) -> WhereSample:
        """The where-head on h_t. Unless ``routing.reinforce_reaches_core``, a stochastic head reads a
        detached h_t, so REINFORCE trains only the location head and never the core or glimpse network."""
        if self.where_head.stochastic and not self.config.routing.reinforce_reaches_core:
            h = h.detach()
        return self.where_head(h, sample=sample, generator=generator)

    def value(self, h: torch.Tensor) -> torch.Tensor:
        """Baseline b_t for h_t of any leading shape (..., hidden) -> (...). Unless
        ``routing.baseline_reaches_core`` it reads a detached h_t, so its squared error trains only the
        baseline head."""
        if not self.config.routing.baseline_reaches_core:
            h = h.detach()
        return self.baseline(h.reshape(-1, h.shape[-1])).view(h.shape[:-1])

    # -- the one unroll ----------------------------------------------------------------------------------

    def unroll(
        self, images: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> Rollout:
        """Run all glimpses on ``images`` (B, C, H, W). ``sample=False`` follows the policy's means."""
        batch = images.shape[0]
        state = self.core.initial_state(batch, images.device)
        where = self.first_where(state, batch, sample=sample, generator=generator)
        wheres, means, policy_states = [where], [where], []
        for t in range(self.num_glimpses):
            h, state = self.step(images, where, state)
            if t == self.num_glimpses - 1:
                break
            choice = self.next_where(h, sample=sample, generator=generator)
            where = choice.where
            wheres.append(where)
            means.append(choice.mean)
            if self.learns_by_reinforce:
                policy_states.append(h)
        where, where_mean = torch.stack(wheres), torch.stack(means)  # (T, B, where_dim)
        log_probs = baselines = images.new_zeros((0, batch))
        if policy_states:
            # log pi and b_t of all S = T - 1 policy steps at once: a few large operations instead of a few
            # dozen small ones per step (the per-operation overhead is much of a training step at batch 128)
            log_probs = self.where_head.log_prob(where[1:], where_mean[1:])  # (S, B)
            baselines = self.value(torch.stack(policy_states))  # (S, B)
        return Rollout(
            logits=self.classifier(h),
            where=where,
            where_mean=where_mean,
            log_probs=log_probs,
            baselines=baselines,
        )


def _check_pairing(reader: str, differentiable: bool, policy: str, stochastic: bool) -> None:
    if differentiable and stochastic:
        raise AttentionError(
            f"reader '{reader}' is differentiable and is trained by backprop: use "
            f"model.where.policy='deterministic', not '{policy}'"
        )
    if not differentiable and not stochastic:
        raise AttentionError(
            f"reader '{reader}' is not differentiable, so a deterministic where-head "
            "cannot learn: use model.where.policy='gaussian' (or 'random')"
        )


def build_model(
    config: ModelConfig,
    *,
    image_size: tuple[int, int],
    channels: int = 1,
    num_classes: int = 10,
    num_actions: int | None = None,
) -> nn.Module:
    """Build the model named by ``config.name``; every classifier has ``unroll(images, sample, generator)``.
    ``num_actions`` asks for a game agent (only the recurrent attention model acts in a game)."""
    if num_actions is not None:
        if config.name != "ram":
            raise AttentionError(
                f"a game needs model.name = 'ram' (it acts at every frame), not '{config.name}'"
            )
        return RecurrentAttentionModel(
            config, image_size=image_size, channels=channels, num_actions=num_actions
        )
    return MODELS.build(
        config.name, config=config, image_size=image_size, channels=channels, num_classes=num_classes
    )


def _register_models() -> Registry:
    from attention.feedforward import ConvolutionalNet, FullyConnected

    registry = Registry("model")
    registry.register("ram")(lambda config, **kw: RecurrentAttentionModel(config, **kw))
    registry.register("fc")(lambda config, **kw: FullyConnected(config, **kw))
    registry.register("cnn")(lambda config, **kw: ConvolutionalNet(config, **kw))
    return registry


MODELS = _register_models()
