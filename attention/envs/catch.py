"""Catch (RAM paper, sec. 4.2): many games at once as tensors; the rules are in docs/catch.md.

A ``size`` x ``size`` screen of binary pixels. A one-pixel ball starts on the top row at a uniformly drawn
column with a horizontal velocity of -1 or +1 (equally likely) and, every step, falls one row and moves one
column sideways, bouncing off the side walls (a move past a wall is mirrored back and the velocity flips).
A two-pixel paddle on the bottom row starts at a uniformly drawn position and moves one column left, stays,
or moves one column right per step, never leaving the screen. After ``size - 1`` steps the ball reaches the
bottom row: the reward is 1 if the paddle covers the ball's column, else 0, the game is done, and it
restarts at once (the screen returned for a finished game is the first screen of its next game).

All games start together and last the same number of steps, so a batch stays in lockstep. Randomness comes
only from the explicit ``generator`` (start columns, velocities, paddle starts); no global state is used.
"""

from __future__ import annotations

from typing import Any

import torch

from attention import AttentionError

LEFT, STAY, RIGHT = 0, 1, 2
NUM_ACTIONS = 3
PADDLE_WIDTH = 2
MIN_SIZE = 4


class Catch:
    """``num_games`` independent games of Catch on ``size`` x ``size`` screens.

    State (all (B,) long tensors, readable for figures): ``ball_row``, ``ball_col``, ``ball_velocity``
    (-1 or +1 columns per step) and ``paddle`` (the left one of the paddle's two columns).
    """

    def __init__(
        self,
        num_games: int,
        *,
        size: int = 24,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ):
        if num_games < 1:
            raise AttentionError(f"Catch needs num_games >= 1, got {num_games}")
        if size < MIN_SIZE:
            raise AttentionError(f"Catch needs a screen of at least {MIN_SIZE} pixels, got size {size}")
        self.num_games = num_games
        self.size = size
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator(device=self.device)
        shape = (num_games,)
        self.ball_row = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.ball_col = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.ball_velocity = torch.ones(shape, dtype=torch.long, device=self.device)
        self.paddle = torch.zeros(shape, dtype=torch.long, device=self.device)
        self._games = torch.arange(num_games, device=self.device)

    @property
    def steps_per_game(self) -> int:
        """Steps from the first screen until the ball reaches the bottom row (the last, rewarded one)."""
        return self.size - 1

    def reset(self) -> torch.Tensor:
        """Start a new game everywhere; returns the screens (B, 1, H, W)."""
        self._restart(torch.ones(self.num_games, dtype=torch.bool, device=self.device))
        return self.screens()

    def _restart(self, which: torch.Tensor) -> None:
        """Draw new games for the games flagged in ``which`` (B,) bool. Draws for all games every time, so
        the random stream advances the same way whichever games restart (same seed, same games)."""
        n = self.num_games
        col = torch.randint(self.size, (n,), generator=self.generator, device=self.device)
        velocity = torch.randint(2, (n,), generator=self.generator, device=self.device) * 2 - 1
        paddle = torch.randint(
            self.size - PADDLE_WIDTH + 1, (n,), generator=self.generator, device=self.device
        )
        self.ball_row = torch.where(which, torch.zeros_like(self.ball_row), self.ball_row)
        self.ball_col = torch.where(which, col, self.ball_col)
        self.ball_velocity = torch.where(which, velocity, self.ball_velocity)
        self.paddle = torch.where(which, paddle, self.paddle)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Move every paddle by ``actions`` (B,) in {0: left, 1: stay, 2: right} and every ball one step.

        Returns (screens (B, 1, H, W), reward (B,) float, done (B,) bool). The reward is nonzero only when a
        game ends; a finished game has already restarted, so its screen is its next game's first.
        """
        if actions.shape != (self.num_games,):
            raise AttentionError(
                f"Catch.step expects actions of shape ({self.num_games},), got {tuple(actions.shape)}"
            )
        if actions.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise AttentionError(f"Catch.step expects integer actions, got {actions.dtype}")
        if bool(((actions < 0) | (actions >= NUM_ACTIONS)).any()):
            raise AttentionError("Catch.step actions must be 0 (left), 1 (stay) or 2 (right)")
        moves = actions.to(device=self.device, dtype=torch.long) - 1
        self.paddle = (self.paddle + moves).clamp(0, self.size - PADDLE_WIDTH)
        col = self.ball_col + self.ball_velocity
        # A bounce mirrors a move past a side wall back onto the screen: column -1 becomes 1 and size
        # becomes size - 2, and the velocity flips, so the ball never rests on a wall for two steps.
        past = (col < 0) | (col > self.size - 1)
        col = torch.where(col < 0, -col, col)
        col = torch.where(col > self.size - 1, 2 * (self.size - 1) - col, col)
        self.ball_velocity = torch.where(past, -self.ball_velocity, self.ball_velocity)
        self.ball_col = col
        self.ball_row = self.ball_row + 1
        done = self.ball_row == self.size - 1
        caught = (self.ball_col >= self.paddle) & (self.ball_col < self.paddle + PADDLE_WIDTH)
        reward = (done & caught).to(torch.float32)
        if bool(done.any()):
            self._restart(done)
        return self.screens(), reward, done

    def screens(self) -> torch.Tensor:
        """The current screens (B, 1, H, W) float: 1 at the ball and the paddle's two pixels, 0 elsewhere."""
        screens = torch.zeros(self.num_games, 1, self.size, self.size, device=self.device)
        screens[self._games, 0, self.ball_row, self.ball_col] = 1.0
        bottom = self.size - 1
        for offset in range(PADDLE_WIDTH):
            screens[self._games, 0, bottom, self.paddle + offset] = 1.0
        return screens

    def state_dict(self) -> dict[str, Any]:
        """Game state and random stream, for checkpoints: ``load_state_dict`` continues exactly here."""
        return {
            "size": self.size,
            "ball_row": self.ball_row.clone(),
            "ball_col": self.ball_col.clone(),
            "ball_velocity": self.ball_velocity.clone(),
            "paddle": self.paddle.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("size") != self.size or state["ball_row"].shape != (self.num_games,):
            raise AttentionError(
                f"Catch state is for {tuple(state['ball_row'].shape)[0]} games of size {state.get('size')}, "
                f"not {self.num_games} of size {self.size}"
            )
        for key in ("ball_row", "ball_col", "ball_velocity", "paddle"):
            setattr(self, key, state[key].to(device=self.device, dtype=torch.long).clone())
        self.generator.set_state(state["generator"])
