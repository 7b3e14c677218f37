"""The record an unroll returns: what was looked at, the policies' choices, baselines and rewards.

Training, evaluation, search and figures all consume a :class:`Rollout`; the loss functions in
:mod:`attention.losses` are pure functions of it. It lives apart from the models so that every model
(attention or whole-image baseline) and every task can use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """What one pass over a batch produced. T = number of glimpses (frames for a game), B = batch.

    ``where`` (T, B, where_dim): what the reader was given at each glimpse (locations (x, y) for a retina).
    ``where_mean`` (T, B, where_dim): the policy's mean for each (equal to ``where`` when not sampled).
    ``log_probs`` (S, B) and ``baselines`` (S, B): for the S where-choices made by a learned stochastic
    policy (S = T - 1: the first glimpse is not the policy's), else S = 0.
    ``logits`` (B, classes): the classifier at the last glimpse (classification; None for a game).

    A game also records, per frame: ``actions`` (T, B) long, ``action_log_probs`` (T, B) (log pi of the
    action taken, differentiable), ``action_entropy`` (T, B) (of the action policy, differentiable),
    ``rewards`` (T, B) and ``frame_baselines`` (T, B), b_t for every frame (the where-choices' ``baselines``
    are its first S rows).
    """

    logits: torch.Tensor | None
    where: torch.Tensor
    where_mean: torch.Tensor
    log_probs: torch.Tensor
    baselines: torch.Tensor
    actions: torch.Tensor | None = None
    action_log_probs: torch.Tensor | None = None
    action_entropy: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    frame_baselines: torch.Tensor | None = None
