"""The hybrid loss of RAM (sec. 3 and 4) as pure functions of a Rollout.

* Cross-entropy for the classifier at the last step, backpropagated through core and glimpse network.
* REINFORCE with a baseline for the location policy: -sum_t log pi(l_t) (R - b_t), R = 1 if the final
  classification is right else 0 (the only reward, at the last step, undiscounted).
* For a game (:func:`game`), the same REINFORCE for the game actions and the locations, R the game's
  return.
* Squared error of the baseline b_t towards R.

Which parameters the last two reach is decided in the model (``routing`` options); here the advantage
R - b_t is always a constant to REINFORCE, so REINFORCE never trains the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention.rollout import Rollout


@dataclass
class LossTerms:
    total: torch.Tensor
    cross_entropy: torch.Tensor
    reinforce: torch.Tensor
    baseline: torch.Tensor
    reward: torch.Tensor  # mean reward (= accuracy of this batch's sampled rollout)
    errors: torch.Tensor  # number of misclassified examples in the batch (a game: of games lost)
    entropy: torch.Tensor | None = None  # a game: mean entropy of the action policy per frame


def reward(rollout: Rollout, labels: torch.Tensor) -> torch.Tensor:
    """R per example: 1.0 when the last-step classification is right, else 0.0. (B,)"""
    return (rollout.logits.argmax(dim=1) == labels).to(rollout.logits.dtype)


def cross_entropy(rollout: Rollout, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(rollout.logits, labels)


def reinforce(rollout: Rollout, returns: torch.Tensor) -> torch.Tensor:
    """RAM eq. (2): batch mean of -sum_t log pi(l_t | s_1:t) (R - b_t), with R - b_t held constant."""
    if rollout.log_probs.numel() == 0:
        return rollout.baselines.new_zeros(())
    advantage = (returns[None, :] - rollout.baselines).detach()  # (S, B)
    return -(rollout.log_probs * advantage).sum(dim=0).mean()


def baseline_error(rollout: Rollout, returns: torch.Tensor) -> torch.Tensor:
    """Mean over steps and batch of (b_t - R)^2."""
    if rollout.baselines.numel() == 0:
        return rollout.baselines.new_zeros(())
    return ((rollout.baselines - returns[None, :]) ** 2).mean()


def hybrid(
    rollout: Rollout, labels: torch.Tensor, *, reinforce_weight: float = 1.0, baseline_weight: float = 1.0
) -> LossTerms:
    returns = reward(rollout, labels)
    ce = cross_entropy(rollout, labels)
    policy = reinforce(rollout, returns)
    base = baseline_error(rollout, returns)
    return LossTerms(
        total=ce + reinforce_weight * policy + baseline_weight * base,
        cross_entropy=ce,
        reinforce=policy,
        baseline=base,
        reward=returns.mean(),
        errors=(1 - returns).sum(),
    )


def game_return(rollout: Rollout) -> torch.Tensor:
    """R per game: the sum of its rewards, undiscounted (in Catch, the final reward alone). (B,)"""
    return rollout.rewards.sum(dim=0)


def game(
    rollout: Rollout,
    *,
    reinforce_weight: float = 1.0,
    baseline_weight: float = 1.0,
    entropy_weight: float = 0.0,
) -> LossTerms:
    """RAM sec. 4.2: REINFORCE from the game's return for both policies, with the learned baseline.

    Every frame's game action and every where-choice is weighted by the same advantage R - b_t (b_t from
    the core state the choice was made in), held constant; the baseline of every frame is fitted to R.
    ``entropy_weight`` (not in the paper; 0 leaves it out) rewards the action policy's entropy, summed over
    a game's frames like the REINFORCE term, so the softmax does not collapse onto one action before the
    return says which is better.
    """
    returns = game_return(rollout)
    advantage = (returns[None, :] - rollout.frame_baselines).detach()  # (T, B)
    actions = -(rollout.action_log_probs * advantage).sum(dim=0).mean()
    policy = actions + reinforce(rollout, returns)
    base = ((rollout.frame_baselines - returns[None, :]) ** 2).mean()
    entropy = rollout.action_entropy.sum(dim=0).mean()  # per game, as the REINFORCE term
    zero = returns.new_zeros(())
    return LossTerms(
        total=reinforce_weight * policy + baseline_weight * base - entropy_weight * entropy,
        cross_entropy=zero,
        reinforce=policy,
        baseline=base,
        reward=returns.mean(),
        errors=(returns <= 0).sum(),
        entropy=rollout.action_entropy.mean(),
    )
