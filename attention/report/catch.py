"""Figures of a Catch agent: an animation of it playing (the glimpse's scales drawn on every frame), its
catch rate against frames seen, and where its glimpse sits relative to the ball over a game.

Each ``plot_*`` takes data and an Axes and returns the Axes; ``save_*`` write files (Agg backend, Pillow
for the GIF). Nothing here calls ``plt.show()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import animation  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from attention import AttentionError  # noqa: E402
from attention.envs.catch import PADDLE_WIDTH, Catch  # noqa: E402
from attention.readers.retina import patch_squares  # noqa: E402
from attention.report.figures import save_figure  # noqa: E402
from attention.runs import temporary_beside  # noqa: E402
from attention.tasks.catch import POLICY_SEED_OFFSET, play  # noqa: E402

# the paper's best agent (RAM sec. 4.2) and a uniformly random agent under docs/catch.md's rules
PAPER_CATCH_RATE = 0.85
RANDOM_CATCH_RATE = 1 / 12
SCALE_COLOURS = ("tab:red", "tab:orange", "gold")


class _RecordingCatch(Catch):
    """Catch that remembers where every ball landed and every paddle ended before its game restarted."""

    def _restart(self, which: torch.Tensor) -> None:
        self.landed = (self.ball_col.clone(), self.paddle.clone())
        super()._restart(which)


@dataclass
class Games:
    """Recorded games: F = frames per game (the agent's steps), B = games.

    ``ball`` (F + 1, B, 2) and ``paddle`` (F + 1, B) as (row, column) and left column in pixels, the last
    entry where the ball landed; ``where`` (F, B, 2) the glimpse location (x, y) in [-1, 1] read at each
    frame; ``caught`` (B,) bool; ``size`` the screen side.
    """

    ball: np.ndarray
    paddle: np.ndarray
    where: np.ndarray
    caught: np.ndarray
    size: int


@torch.no_grad()
def record_games(model: torch.nn.Module, *, num_games: int, seed: int, sample: bool, size: int) -> Games:
    """Play ``num_games`` fresh games from ``seed`` (policy stream as in evaluation) and record them."""
    device = next(model.parameters()).device
    env = _RecordingCatch(num_games, size=size, generator=torch.Generator(device=device).manual_seed(seed))
    env.reset()
    balls, paddles = [], []
    original_step = env.step

    def step(actions: torch.Tensor):  # the state each frame was shown in, before the move
        balls.append(torch.stack([env.ball_row, env.ball_col], dim=1).cpu().numpy())
        paddles.append(env.paddle.cpu().numpy())
        return original_step(actions)

    env.step = step  # type: ignore[method-assign]
    model.eval()
    policy = torch.Generator(device=device).manual_seed(seed + POLICY_SEED_OFFSET)
    rollout = play(model, env, sample=sample, generator=policy)
    landed_col, landed_paddle = (t.cpu().numpy() for t in env.landed)
    balls.append(np.stack([np.full(num_games, size - 1), landed_col], axis=1))
    paddles.append(landed_paddle)
    return Games(
        ball=np.stack(balls),
        paddle=np.stack(paddles),
        where=rollout.where.cpu().numpy(),
        caught=rollout.rewards[-1].cpu().numpy() > 0,
        size=size,
    )


def screen(games: Games, frame: int, game: int) -> np.ndarray:
    """The screen of one game at one frame (frame F: the ball on the bottom row, where it landed)."""
    image = np.zeros((games.size, games.size))
    row, col = games.ball[frame, game]
    image[row, col] = 1.0
    left = games.paddle[frame, game]
    image[games.size - 1, left : left + PADDLE_WIDTH] = 1.0
    return image


def plot_frame(ax: Axes, games: Games, frame: int, game: int, *, patch_size: int, num_scales: int) -> Axes:
    """One frame of one game: the screen and the glimpse's squares (finest red, then orange, yellow)."""
    ax.clear()
    ax.imshow(screen(games, frame, game), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    frames = games.where.shape[0]
    if frame < frames:
        squares = patch_squares(
            tuple(games.where[frame, game]),
            height=games.size,
            width=games.size,
            patch_size=patch_size,
            num_scales=num_scales,
        )
        for scale, (top, left, side) in enumerate(squares):
            colour = SCALE_COLOURS[scale % len(SCALE_COLOURS)]
            ax.add_patch(
                Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor=colour, linewidth=1.2)
            )
        title = f"frame {frame + 1}/{frames}"
    else:
        title = "caught" if games.caught[game] else "missed"
    ax.set_title(title, fontsize=8)
    ax.set_xlim(-0.5, games.size - 0.5)
    ax.set_ylim(games.size - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def save_animation(
    games: Games, out: Path, *, patch_size: int, num_scales: int, columns: int = 4, fps: int = 4
) -> Path:
    """An animated GIF of the recorded games side by side, every frame with the glimpse's squares, the last
    frame of each game (caught or missed) held a little longer."""
    count = games.ball.shape[1]
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    last = games.ball.shape[0] - 1
    sequence = list(range(last + 1)) + [last] * 3

    def draw(index: int):
        for game, ax in enumerate(axes.flat[:count]):
            plot_frame(ax, games, sequence[index], game, patch_size=patch_size, num_scales=num_scales)
        return list(axes.flat)

    movie = animation.FuncAnimation(fig, draw, frames=len(sequence), blit=False)
    out = Path(out)
    # a name of its own, so two reports writing into one folder do not clobber each other's frames;
    # ".gif" last, as PillowWriter picks its format by the suffix
    handle, name = temporary_beside(out, suffix=".tmp.gif")
    os.close(handle)
    temporary = Path(name)
    try:
        movie.save(temporary, writer=animation.PillowWriter(fps=fps), dpi=80)
        temporary.replace(out)  # whole or not at all
    finally:
        plt.close(fig)
        temporary.unlink(missing_ok=True)
    return out


def plot_catch_rate(ax: Axes, curves: list[tuple[str, list[dict[str, Any]]]]) -> Axes:
    """Validation catch rate (sampled and greedy policies) against frames seen, per run, with the paper's
    85% and a random agent's 1/12 for reference."""
    plotted = 0
    for index, (label, rows) in enumerate(curves):
        rows = [row for row in rows if "frames" in row and "val_catch_rate" in row]
        if not rows:
            continue
        frames = np.array([row["frames"] for row in rows]) / 1e6
        colour = f"C{index}"
        ax.plot(frames, [row["val_catch_rate"] for row in rows], "-", color=colour, label=f"{label} sampled")
        greedy = [row.get("val_catch_rate_greedy") for row in rows]
        if all(value is not None for value in greedy):
            ax.plot(frames, greedy, "--", color=colour, label=f"{label} greedy")
        plotted += 1
    if not plotted:
        raise AttentionError("no run recorded a catch rate per interval (metrics.jsonl of a catch run)")
    ax.axhline(PAPER_CATCH_RATE, color="grey", linestyle=":", linewidth=1, label="paper (about 85%)")
    ax.axhline(RANDOM_CATCH_RATE, color="black", linestyle=":", linewidth=1, label="random agent (1/12)")
    ax.set_xlabel("frames seen (millions)")
    ax.set_ylabel("validation catch rate")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def glimpse_offsets(games: Games) -> np.ndarray:
    """(F, B, 2): the glimpse centre minus the ball, (columns, rows), in pixels, at every frame."""
    size = games.size
    centre = (games.where + 1) * size / 2 - 0.5  # pixel coordinates of the glimpse centre (x, y)
    ball = games.ball[:-1].astype(float) + 0.0  # (F, B, 2) as (row, column)
    return np.stack([centre[..., 0] - ball[..., 1], centre[..., 1] - ball[..., 0]], axis=-1)


def plot_tracking(ax: Axes, games: Games, *, patch_size: int) -> Axes:
    """Where the glimpse sits relative to the ball at each frame: the median horizontal and vertical offset
    (glimpse centre minus ball, pixels) over the games, with the band of the middle half, and the half-width
    of the finest patch (inside it, the ball is seen at full resolution)."""
    offsets = glimpse_offsets(games)
    frames = np.arange(1, offsets.shape[0] + 1)
    for axis, (name, colour) in enumerate((("horizontal", "C0"), ("vertical", "C1"))):
        low, mid, high = np.percentile(offsets[..., axis], [25, 50, 75], axis=1)
        ax.plot(frames, mid, color=colour, label=f"{name} offset (median)")
        ax.fill_between(frames, low, high, color=colour, alpha=0.2, linewidth=0)
    ax.axhspan(-patch_size / 2, patch_size / 2, color="grey", alpha=0.15, label="finest patch")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("frame of the game")
    ax.set_ylabel("glimpse centre - ball (pixels)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def save_catch_figures(
    run_dir: Path,
    out_dir: Path,
    *,
    device: str | None = None,
    animated_games: int = 4,
    tracked_games: int = 1000,
    seed: int | None = None,
) -> list[Path]:
    """The three figures of a trained Catch run into ``out_dir``: ``catch_play.gif``,
    ``catch_rate.png`` and ``catch_tracking.png`` (games from the run's test seed unless ``seed``)."""
    from attention.build import pick_device
    from attention.evaluate import load_trained
    from attention.runs import read_metrics

    device_ = pick_device(device)
    model, config = load_trained(run_dir, device_)
    if config.data.task != "catch":
        raise AttentionError(f"{run_dir} is a run of task '{config.data.task}', not catch")
    seed = config.data.test_seed if seed is None else seed
    reader = config.model.reader
    size = config.data.canvas_size
    out_dir = Path(out_dir)
    written = []
    played = record_games(model, num_games=animated_games, seed=seed, sample=True, size=size)
    written.append(
        save_animation(
            played,
            out_dir / "catch_play.gif",
            patch_size=reader.patch_size,
            num_scales=reader.num_scales,
        )
    )
    curve = [(Path(run_dir).name, read_metrics(run_dir))]
    written.append(save_figure(lambda ax: plot_catch_rate(ax, curve), out_dir / "catch_rate.png"))
    tracked = record_games(model, num_games=tracked_games, seed=seed, sample=True, size=size)
    written.append(
        save_figure(
            lambda ax: plot_tracking(ax, tracked, patch_size=reader.patch_size),
            out_dir / "catch_tracking.png",
        )
    )
    return written


__all__ = ["Games", "record_games", "save_animation", "save_catch_figures"]
