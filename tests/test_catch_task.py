"""The Catch task: the agent's unroll, its loss, training with frame budgets, resume and evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from attention import AttentionError
from attention.build import make_model, resolve_config
from attention.config import Config, with_overrides
from attention.envs.catch import Catch
from attention.losses import game
from attention.runs import CHECKPOINT, METRICS, RESULT, WEIGHTS, read_metrics
from attention.tasks.catch import play, wilson_interval
from attention.train import fit

AGENT = {
    "data.task": "catch",
    "model.reader.patch_size": 6,
    "model.reader.num_scales": 3,
    "model.core.name": "lstm",
}
# frames of the slow learning test (about 14 minutes on one thread). With the recipe's constant learning rate
# the training up to here is the committed run's own (results/runs/8c482776c7ea84fc, the same seed): its
# sampled validation catch rate left a random agent's at about 5.5 million frames and was 0.63 at 9 million
# and 0.86 at 12 million. The margin is for another CPU, whose rounding can move that start: the cosine run
# of the same seed started at 9 million frames, and a start even that late would leave about 0.4 here
SHORT_RUN_FRAMES = 12_000_000
TINY = {
    **AGENT,
    "model.core.hidden_size": 32,
    "model.glimpse.output_size": 32,
    "train.batch_size": 16,
    "game.frames": 3 * 16 * 23,
    "game.frames_per_interval": 16 * 23,
    "game.validation_games": 40,
    "game.test_games": 50,
    "train.eval_batch_size": 25,
}


def config(**overrides) -> Config:
    return resolve_config(with_overrides(Config(), {**TINY, **overrides}))


def test_catch_defaults_to_the_paper_screen_and_refuses_what_cannot_play():
    assert config().data.canvas_size == 24
    for key, value, message in [
        ("model.name", "cnn", "model.name = 'ram'"),
        ("model.where.policy", "deterministic", "stochastic"),
        ("game.frames", 0, "game.frames"),
        ("data.clutter_count", 4, "no clutter"),
        ("data.eval_limit", 0, "eval_limit"),
    ]:
        with pytest.raises(AttentionError, match=message):
            config(**{key: value})


def test_one_game_unrolls_every_frame_with_rewards_only_at_its_end():
    cfg = config()
    model = make_model(cfg, torch.device("cpu"))
    env = Catch(8, generator=torch.Generator().manual_seed(0))
    env.reset()
    rollout = play(model, env, sample=True, generator=torch.Generator().manual_seed(1))
    frames = 23
    assert rollout.where.shape == (frames, 8, 2) and rollout.actions.shape == (frames, 8)
    assert rollout.log_probs.shape == (frames - 1, 8) and rollout.frame_baselines.shape == (frames, 8)
    assert (rollout.rewards[:-1] == 0).all() and set(rollout.rewards[-1].tolist()) <= {0.0, 1.0}
    assert (env.ball_row == 0).all()  # the games have restarted, ready for the next batch
    assert ((rollout.where >= -1) & (rollout.where <= 1)).all()


def test_both_policies_and_the_core_learn_from_the_return_and_the_baseline_only_from_its_error():
    cfg = config()
    model = make_model(cfg, torch.device("cpu"))
    env = Catch(32, generator=torch.Generator().manual_seed(0))
    env.reset()
    rollout = play(model, env, sample=True, generator=torch.Generator().manual_seed(1))
    terms = game(rollout)
    model.zero_grad()
    terms.reinforce.backward(retain_graph=True)
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("action_policy") for n in reached)
    assert any(n.startswith("where_head") for n in reached)
    assert any(n.startswith("core") for n in reached)  # through the action head
    assert not any(n.startswith("baseline") for n in reached)  # the advantage is held constant
    model.zero_grad()
    terms.baseline.backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {"baseline.linear.weight", "baseline.linear.bias"}  # routing default: detached h_t


def test_wilson_interval_brackets_the_rate_and_narrows_with_more_games():
    low, high = wilson_interval(85, 100)
    assert low < 0.85 < high
    low_many, high_many = wilson_interval(8500, 10_000)
    assert low < low_many < 0.85 < high_many < high
    assert wilson_interval(0, 50)[0] == pytest.approx(0.0, abs=1e-12)


def test_training_counts_frames_checkpoints_resumes_identically_and_evaluates(tmp_path):
    cfg = config()
    whole = fit(cfg, run_dir=tmp_path / "whole", progress=False)
    rows = read_metrics(tmp_path / "whole")
    assert [row["frames"] for row in rows] == [368, 736, 1104]  # 16 games x 23 frames per interval
    assert all(0 <= row["val_catch_rate"] <= 1 and 0 <= row["mean_reward"] <= 1 for row in rows)
    assert whole["n_games"] == 50 and 0 <= whole["catch_rate"] <= 1
    low, high = whole["catch_rate_interval"]
    assert low <= whole["catch_rate"] <= high
    partial = fit(cfg, run_dir=tmp_path / "split", progress=False, stop_after_epochs=1)
    assert partial["interrupted_after_epoch"] == 1 and (tmp_path / "split" / CHECKPOINT).exists()
    fit(cfg, run_dir=tmp_path / "split", progress=False, resume=True)
    first = torch.load(tmp_path / "whole" / WEIGHTS, weights_only=True)
    second = torch.load(tmp_path / "split" / WEIGHTS, weights_only=True)
    assert all(torch.equal(first[key], second[key]) for key in first)

    def strip(rows):  # wall-clock fields differ between any two runs
        return [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k} for r in rows]

    assert strip(rows) == strip(read_metrics(tmp_path / "split"))


def test_cli_trains_catch_with_a_frame_budget_and_evaluates_json(tmp_path):
    run = tmp_path / "run"
    sets = [f"{key}={value}" for key, value in TINY.items() if key != "data.task"]
    command = [sys.executable, "-m", "attention.cli", "train", "--task", "catch", "--run-dir", str(run)]
    command += ["--no-progress"] + [arg for item in sets for arg in ("--set", item)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "catch rate" in done.stdout
    assert (run / METRICS).exists()
    shown = subprocess.run(
        [sys.executable, "-m", "attention.cli", "eval", str(run), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(shown.stdout)
    assert result["catch_rate"] == json.loads((run / RESULT).read_text())["catch_rate"]
    assert result["n_games"] == 50 and result["protocol"]["test_seed"] == 2
    text = subprocess.run(
        [sys.executable, "-m", "attention.cli", "eval", str(run), "--test-seed", "9"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "test seed 9" in text.stdout


@pytest.mark.slow
def test_a_short_training_run_beats_a_random_agent_clearly(tmp_path):
    # the committed recipe, shortened; a random agent catches 1/12 (docs/catch.md)
    from pathlib import Path

    from attention.config import load_toml

    recipe = Path(__file__).resolve().parents[1] / "studies" / "recipes" / "catch.toml"
    overrides = {**load_toml(recipe), "game.frames": SHORT_RUN_FRAMES, "game.test_games": 2000}
    torch.set_num_threads(1)
    result = fit(
        resolve_config(with_overrides(Config(), overrides)), run_dir=tmp_path / "run", progress=False
    )
    low, _ = result["catch_rate_interval"]
    assert low > 2 * (1 / 12)


def test_glimpse_offset_is_zero_when_the_glimpse_centre_is_on_the_ball():
    from attention.report.catch import Games, glimpse_offsets

    ball = np.array([[[3, 10]], [[4, 11]]])  # (F + 1, B, 2) rows and columns
    # the centre of pixel (row r, column c) is at x = (c + 0.5) / 24 * 2 - 1
    where = np.array([[[(10.5 / 24) * 2 - 1, (3.5 / 24) * 2 - 1]]])
    games = Games(ball=ball, paddle=np.zeros((2, 1), int), where=where, caught=np.array([True]), size=24)
    np.testing.assert_allclose(glimpse_offsets(games), np.zeros((1, 1, 2)), atol=1e-9)


def test_catch_figures_render_an_animated_gif_and_two_pngs(tmp_path):
    from PIL import Image

    from attention.report.catch import save_catch_figures

    run = tmp_path / "run"
    fit(config(**{"game.frames": 16 * 23}), run_dir=run, progress=False)
    gif, curve, tracking = save_catch_figures(run, tmp_path / "figures", animated_games=2, tracked_games=20)
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames >= 24  # every frame of a game, and its end
    assert curve.stat().st_size > 10_000 and tracking.stat().st_size > 10_000


def test_entropy_bonus_moves_the_action_policy_towards_uniform():
    cfg = config()
    model = make_model(cfg, torch.device("cpu"))
    with torch.no_grad():
        model.action_policy.linear.bias.copy_(torch.tensor([2.0, 0.0, -2.0]))  # far from uniform
    env = Catch(16, generator=torch.Generator().manual_seed(0))
    env.reset()
    rollout = play(model, env, sample=True, generator=torch.Generator().manual_seed(1))
    terms = game(rollout, reinforce_weight=0.0, baseline_weight=0.0, entropy_weight=1.0)
    terms.total.backward()
    # descending the loss raises the entropy: the likeliest action's logit goes down, the rarest's up
    gradient = model.action_policy.linear.bias.grad
    assert gradient[0] > 0 > gradient[2]
    assert game(rollout).entropy == terms.entropy  # logged whatever its weight


def test_an_agent_with_random_glimpses_still_learns_its_game_actions():
    cfg = config(**{"model.where.policy": "random"})
    model = make_model(cfg, torch.device("cpu"))
    env = Catch(8, generator=torch.Generator().manual_seed(0))
    env.reset()
    rollout = play(model, env, sample=True, generator=torch.Generator().manual_seed(1))
    assert rollout.log_probs.shape == (0, 8)  # no location policy to train
    terms = game(rollout)
    terms.total.backward()
    assert model.action_policy.linear.weight.grad.abs().sum() > 0
    assert model.baseline.linear.weight.grad.abs().sum() > 0
