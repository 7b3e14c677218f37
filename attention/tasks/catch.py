"""The Catch task (RAM sec. 4.2): a RAM agent plays batches of games and learns from the final reward.

A batch is one game on each of ``train.batch_size`` screens (the games of :class:`Catch` run in lockstep,
so every game of a batch starts and ends together). At every frame the agent reads the screen at its
current location, updates its core, and takes two actions from h_t: a game action (linear softmax) and the
next location (the Gaussian where-head). Both policies learn by REINFORCE from the game's return, with the
learned baseline (:func:`attention.losses.game`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from attention import AttentionError
from attention.config import Config
from attention.envs.catch import MIN_SIZE, NUM_ACTIONS, Catch
from attention.heads import WHERE_HEADS
from attention.losses import LossTerms, game
from attention.rollout import Rollout
from attention.tasks import EVALUATION_SEED_OFFSET

SCREEN_SIZE = 24  # the paper's 24 x 24 screen
POLICY_SEED_OFFSET = EVALUATION_SEED_OFFSET  # the policies' stream playing a seed's games


def play(model: torch.nn.Module, env: Catch, *, sample: bool, generator: torch.Generator | None) -> Rollout:
    """One whole game on each of ``env``'s screens, from the start of its games; returns the Rollout with
    T = ``env.steps_per_game`` frames. ``sample=False`` takes the most likely action and the mean location
    (the first location is still drawn per ``model.where.initial``)."""
    batch, frames = env.num_games, env.steps_per_game
    if not bool((env.ball_row == 0).all()):
        raise ValueError("play() starts at the first frame of every game")
    screens = env.screens()
    state = model.core.initial_state(batch, screens.device)
    where = model.first_where(state, batch, sample=sample, generator=generator)
    wheres, means, hiddens, actions, action_log_probs, entropies, rewards = (
        [where],
        [where],
        [],
        [],
        [],
        [],
        [],
    )
    for t in range(frames):
        h, state = model.step(screens, where, state)
        action, action_log_prob, entropy = model.action_policy(h, sample=sample, generator=generator)
        screens, reward, _ = env.step(action)
        hiddens.append(h)
        actions.append(action)
        action_log_probs.append(action_log_prob)
        entropies.append(entropy)
        rewards.append(reward)
        if t == frames - 1:
            break  # the game is over: a location chosen now would be looked at in no frame
        choice = model.next_where(h, sample=sample, generator=generator)
        where = choice.where
        wheres.append(where)
        means.append(choice.mean)
    where, where_mean = torch.stack(wheres), torch.stack(means)  # (T, B, 2)
    baselines = model.value(torch.stack(hiddens))  # (T, B): b_t for every frame
    if model.learns_by_reinforce:
        # log pi of the T - 1 where-choices (all steps at once), b_t of the frame each was made in
        log_probs, where_baselines = model.where_head.log_prob(where[1:], where_mean[1:]), baselines[:-1]
    else:  # random glimpses: nothing for the location policy to learn
        log_probs = where_baselines = baselines.new_zeros((0, batch))
    return Rollout(
        logits=None,
        where=where,
        where_mean=where_mean,
        log_probs=log_probs,
        baselines=where_baselines,
        actions=torch.stack(actions),
        action_log_probs=torch.stack(action_log_probs),
        action_entropy=torch.stack(entropies),
        rewards=torch.stack(rewards),
        frame_baselines=baselines,
    )


@torch.no_grad()
def caught_games(
    model: torch.nn.Module,
    *,
    num_games: int,
    seed: int,
    policy_seed: int,
    sample: bool,
    batch_size: int,
    size: int,
    device: torch.device,
) -> torch.Tensor:
    """Which of ``num_games`` fresh games drawn from ``seed`` the model catches: (num_games,) bool. The
    policies' randomness (first location; with ``sample``, actions and locations) comes from a stream of
    its own, seeded ``policy_seed``, so the same games can be played again with other draws."""
    was_training = model.training
    model.eval()
    games = torch.Generator(device=device).manual_seed(seed)
    policy = torch.Generator(device=device).manual_seed(policy_seed)
    caught = []
    for start in range(0, num_games, batch_size):
        env = Catch(min(batch_size, num_games - start), size=size, generator=games, device=device)
        env.reset()
        caught.append(play(model, env, sample=sample, generator=policy).rewards[-1].cpu() > 0)
    model.train(was_training)
    return torch.cat(caught)


def catch_rate(
    model: torch.nn.Module,
    *,
    num_games: int,
    seed: int,
    sample: bool,
    batch_size: int,
    size: int,
    device: torch.device,
) -> tuple[float, float]:
    """(fraction caught, number caught) of ``num_games`` fresh games drawn from ``seed``, the policies'
    stream seeded ``seed + POLICY_SEED_OFFSET``."""
    caught = caught_games(
        model,
        num_games=num_games,
        seed=seed,
        policy_seed=seed + POLICY_SEED_OFFSET,
        sample=sample,
        batch_size=batch_size,
        size=size,
        device=device,
    )
    number = float(caught.sum())
    return number / num_games, number


def wilson_interval(successes: float, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (stays inside [0, 1] near 0 or 1)."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


class CatchTask:
    """The Catch task; see the module docstring and docs/catch.md."""

    selection_metric = "val_catch_rate"  # the metrics row's validation number
    selection_label = "validation miss rate (1 - sampled catch rate)"
    report_command = "catch"  # the games played, the catch rate curve; no test error for `report table`

    def __init__(self, config: Config, *, data_dir: str | Path | None, device: torch.device):
        self.config = config
        self.device = device
        self.size = config.data.canvas_size
        # the running games and their random stream, saved in every checkpoint
        self.env = Catch(
            config.train.batch_size,
            size=self.size,
            generator=torch.Generator(device=device).manual_seed(config.train.seed),
            device=device,
        )
        self.env.reset()

    @staticmethod
    def resolve(config: Config) -> Config:
        data, game_, model = config.data, config.game, config.model
        size = SCREEN_SIZE if data.canvas_size is None else data.canvas_size
        if size < MIN_SIZE:
            raise AttentionError(
                f"catch needs a screen of at least {MIN_SIZE} pixels, got data.canvas_size {size}"
            )
        if data.clutter_count not in (None, 0):
            raise AttentionError("task 'catch' has no clutter: leave data.clutter_count unset")
        if model.name != "ram":
            raise AttentionError(
                f"task 'catch' needs model.name = 'ram' (an agent acting at every frame), not '{model.name}'"
            )
        if not WHERE_HEADS.get(model.where.policy).stochastic:
            raise AttentionError(
                "task 'catch' learns only by REINFORCE, so its where-head must be stochastic: use "
                "model.where.policy = 'gaussian' (or 'random')"
            )
        for name, value in [
            ("frames", game_.frames),
            ("frames_per_interval", game_.frames_per_interval),
            ("validation_games", game_.validation_games),
            ("test_games", game_.test_games),
            ("data.train_limit", 1 if data.train_limit is None else data.train_limit),
            ("data.eval_limit", 1 if data.eval_limit is None else data.eval_limit),
        ]:
            if value < 1:
                key = name if name.startswith("data.") else f"game.{name}"
                raise AttentionError(f"{key} must be >= 1, got {value}")
        return dataclasses.replace(config, data=dataclasses.replace(data, canvas_size=size, clutter_count=0))

    @staticmethod
    def model_shape(config: Config) -> dict[str, Any]:
        size = config.data.canvas_size
        return {"image_size": (size, size), "num_actions": NUM_ACTIONS}

    @property
    def frames_per_step(self) -> int:
        return self.config.train.batch_size * self.env.steps_per_game

    @property
    def frames(self) -> int:
        """The training budget in frames: ``game.frames``, capped at ``data.train_limit`` games."""
        limit = self.config.data.train_limit
        budget = self.config.game.frames
        return budget if limit is None else min(budget, limit * self.env.steps_per_game)

    @property
    def steps_per_epoch(self) -> int:
        interval = min(self.config.game.frames_per_interval, self.frames)
        return math.ceil(interval / self.frames_per_step)

    @property
    def num_epochs(self) -> int:
        # whole intervals only, never past the frame budget (at least one interval)
        return max(1, self.frames // (self.steps_per_epoch * self.frames_per_step))

    def _games(self, wanted: int) -> int:
        """Evaluation games: ``wanted``, capped at ``data.eval_limit`` (smoke runs)."""
        limit = self.config.data.eval_limit
        return wanted if limit is None else min(wanted, limit)

    def batches(self) -> Iterator[Catch]:
        """One interval: the running games, once per batch (each step plays one whole game on each)."""
        for _ in range(self.steps_per_epoch):
            yield self.env

    def trainer(self, model: torch.nn.Module) -> Callable[..., tuple[LossTerms, int]]:
        t = self.config.train

        def step(env: Catch, generator: torch.Generator) -> tuple[LossTerms, int]:
            rollout = play(model, env, sample=True, generator=generator)
            terms = game(
                rollout,
                reinforce_weight=t.reinforce_weight,
                baseline_weight=t.baseline_weight,
                entropy_weight=t.entropy_weight,
            )
            return terms, env.num_games

        return step

    def epoch_metrics(self, training: dict[str, float], epochs_done: int) -> dict[str, float]:
        return {
            "frames": epochs_done * self.steps_per_epoch * self.frames_per_step,
            "lr": training["lr"],
            "train_loss": training["loss"],
            "reinforce": training["reinforce"],
            "baseline_mse": training["baseline"],
            "action_entropy": training["entropy"],
            # one reward per game, 1 for a catch: the mean reward is the training catch rate
            "mean_reward": training["reward"],
            "train_frames_per_s": training["per_s"] * self.env.steps_per_game,
        }

    def _rate(
        self, model: torch.nn.Module, *, num_games: int, seed: int, sample: bool
    ) -> tuple[float, float]:
        return catch_rate(
            model,
            num_games=num_games,
            seed=seed,
            sample=sample,
            batch_size=self.config.train.eval_batch_size,
            size=self.size,
            device=self.device,
        )

    def validate(self, model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        """Catch rate of ``game.validation_games`` fresh games with sampled and with greedy policies; the
        sampled one (the policy as trained) selects: the selection value is its miss rate."""
        n, seed = self._games(self.config.game.validation_games), self.config.data.validation_seed
        sampled, _ = self._rate(model, num_games=n, seed=seed, sample=True)
        greedy, _ = self._rate(model, num_games=n, seed=seed, sample=False)
        return 1.0 - sampled, {"val_catch_rate": sampled, "val_catch_rate_greedy": greedy}

    @staticmethod
    def selection_result(best: float) -> dict[str, float]:
        return {"validation_catch_rate": 1.0 - best}

    @staticmethod
    def result_selection(result: dict[str, Any]) -> float:
        return 1.0 - float(result["validation_catch_rate"])

    @staticmethod
    def epoch_selection(row: dict[str, Any]) -> float:
        return 1.0 - float(row[CatchTask.selection_metric])

    @staticmethod
    def selection_percent(selection: float) -> float:
        return 100.0 * selection  # the miss rate, a fraction

    def evaluate(self, model: torch.nn.Module, test_seed: int | None = None) -> dict[str, Any]:
        """Catch rate over ``game.test_games`` fresh games from the test seed, with sampled and with greedy
        policies, each with its 95% Wilson interval. The same games for both."""
        seed = self.config.data.test_seed if test_seed is None else test_seed
        n = self._games(self.config.game.test_games)
        sampled, caught = self._rate(model, num_games=n, seed=seed, sample=True)
        greedy, caught_greedy = self._rate(model, num_games=n, seed=seed, sample=False)
        return {
            "task": "catch",
            "data": dataclasses.asdict(dataclasses.replace(self.config.data, test_seed=seed)),
            "n_games": n,
            "catch_rate": sampled,
            "catch_rate_interval": list(wilson_interval(caught, n)),
            "catch_rate_greedy": greedy,
            "catch_rate_greedy_interval": list(wilson_interval(caught_greedy, n)),
            "protocol": {
                "games": f"{n} fresh games of docs/catch.md drawn from test seed {seed}",
                "test_seed": seed,
                "weights": "best validation interval (sampled catch rate)",
                "catch_rate": "sampled policies: game action drawn from the softmax, location from the "
                "Gaussian",
                "catch_rate_greedy": "greedy policies: most likely game action, mean location",
                "interval": "95% Wilson score interval",
            },
        }

    def evaluation_draws(self, model: torch.nn.Module, *, test_seed: int, draws: int) -> dict[str, Any]:
        """A study's evaluation (attention/report/evaluation.py): ``draws`` plays of the same
        ``game.test_games`` games of ``test_seed`` with the greedy policies, draw k's randomness seeded
        ``test_seed + POLICY_SEED_OFFSET + k`` (draw 0 is result.json's greedy pass); an error is a game
        missed. Greedy play averages no predictions, so the averaged error is the draws' mean."""
        n = self._games(self.config.game.test_games)
        errors, first_caught = [], None
        for draw in range(draws):
            caught = caught_games(
                model,
                num_games=n,
                seed=test_seed,
                policy_seed=test_seed + POLICY_SEED_OFFSET + draw,
                sample=False,
                batch_size=self.config.train.eval_batch_size,
                size=self.size,
                device=self.device,
            )
            errors.append(100.0 * int((~caught).sum()) / n)
            first_caught = caught if first_caught is None else first_caught
        return {
            "errors_pct": errors,
            "averaged_error_pct": sum(errors) / draws,
            "first_correct": first_caught.numpy(),
            "n": n,
        }

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        low, high = result["catch_rate_interval"]
        return (
            f"catch: catch rate {100 * result['catch_rate']:.2f}% sampled (95% {100 * low:.2f}-"
            f"{100 * high:.2f}%), {100 * result['catch_rate_greedy']:.2f}% greedy, over {result['n_games']} "
            f"games of test seed {result['protocol']['test_seed']}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"games": self.env.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.env.load_state_dict(saved["games"])
