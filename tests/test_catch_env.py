"""The rules of Catch (docs/catch.md), checked on the batched game."""

from __future__ import annotations

import math

import pytest
import torch

from attention import AttentionError
from attention.envs.catch import LEFT, NUM_ACTIONS, RIGHT, STAY, Catch

SIZE = 24


def _game(num_games: int = 512, seed: int = 0, size: int = SIZE) -> Catch:
    return Catch(num_games, size=size, generator=torch.Generator().manual_seed(seed))


def _random_actions(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(NUM_ACTIONS, (n,), generator=generator)


def _where(screens: torch.Tensor, row: int) -> torch.Tensor:
    """Columns lit on one row of each screen: (B, W) bool."""
    return screens[:, 0, row] > 0


def test_screen_shows_ball_and_two_pixel_paddle():
    env = _game()
    screens = env.reset()
    assert screens.shape == (512, 1, SIZE, SIZE) and screens.dtype == torch.float32
    assert set(screens.unique().tolist()) == {0.0, 1.0}
    assert (screens.sum(dim=(1, 2, 3)) == 3).all()  # ball on the top row, paddle on the bottom row
    assert (_where(screens, 0).sum(1) == 1).all() and (_where(screens, SIZE - 1).sum(1) == 2).all()


def test_ball_falls_one_row_and_moves_one_column_per_step():
    env = _game()
    env.reset()
    generator = torch.Generator().manual_seed(1)
    for step in range(env.steps_per_game - 1):
        row, col = env.ball_row.clone(), env.ball_col.clone()
        screens, reward, done = env.step(_random_actions(512, generator))
        assert not done.any() and (reward == 0).all()
        assert (env.ball_row == row + 1).all() and (env.ball_row == step + 1).all()
        assert ((env.ball_col - col).abs() == 1).all()
        assert screens[torch.arange(512), 0, env.ball_row, env.ball_col].eq(1).all()


def test_ball_bounces_off_the_side_walls():
    env = _game(num_games=2)
    env.reset()
    # one ball moving into the left wall, one into the right
    env.ball_col = torch.tensor([0, SIZE - 1])
    env.ball_velocity = torch.tensor([-1, 1])
    env.step(torch.full((2,), STAY))
    assert env.ball_col.tolist() == [1, SIZE - 2]
    assert env.ball_velocity.tolist() == [1, -1]
    env.step(torch.full((2,), STAY))
    assert env.ball_col.tolist() == [2, SIZE - 3]


def test_ball_stays_on_screen_through_whole_games():
    env = _game()
    env.reset()
    generator = torch.Generator().manual_seed(2)
    for _ in range(3 * env.steps_per_game):
        env.step(_random_actions(512, generator))
        assert ((env.ball_col >= 0) & (env.ball_col < SIZE)).all()


def test_paddle_never_leaves_the_screen():
    env = _game()
    screens = env.reset()
    for action in [LEFT] * 30 + [RIGHT] * 30:
        screens, _, _ = env.step(torch.full((512,), action))
        assert ((env.paddle >= 0) & (env.paddle <= SIZE - 2)).all()
        assert (_where(screens, SIZE - 1).sum(1) >= 2).all()  # both paddle pixels drawn (ball may add one)
    env.paddle = torch.tensor([0, SIZE - 2] * 256)
    env.step(torch.tensor([LEFT, RIGHT] * 256))  # pushing into a wall leaves the paddle there
    assert env.paddle.tolist() == [0, SIZE - 2] * 256


def test_paddle_moves_by_its_action():
    env = _game(num_games=3)
    env.reset()
    env.paddle = torch.tensor([5, 5, 5])
    env.step(torch.tensor([LEFT, STAY, RIGHT]))
    assert env.paddle.tolist() == [4, 5, 6]


def test_reward_comes_only_on_the_last_row_and_is_one_exactly_when_the_paddle_covers_the_ball():
    env = _game(num_games=2048)
    env.reset()
    generator = torch.Generator().manual_seed(3)
    for step in range(2 * env.steps_per_game):
        actions = _random_actions(2048, generator)
        # where the paddle and ball will be after this step (the rules, restated independently)
        paddle = (env.paddle + actions - 1).clamp(0, SIZE - 2)
        col = env.ball_col + env.ball_velocity
        col = torch.where(col < 0, -col, torch.where(col >= SIZE, 2 * (SIZE - 1) - col, col))
        last_row = env.ball_row + 1 == SIZE - 1
        _, reward, done = env.step(actions)
        assert torch.equal(done, last_row)
        assert (done == ((step + 1) % env.steps_per_game == 0)).all()
        covered = (col == paddle) | (col == paddle + 1)
        assert torch.equal(reward, (last_row & covered).float())
    assert reward.sum() > 0 and (reward[done] == 0).any()  # both outcomes happened


def test_finished_game_restarts_on_the_top_row():
    env = _game()
    env.reset()
    for _ in range(env.steps_per_game):
        screens, _, done = env.step(torch.full((512,), STAY))
    assert done.all() and (env.ball_row == 0).all()
    assert (_where(screens, 0).sum(1) == 1).all()


def test_same_seed_same_games_and_state_dict_resumes():
    first, second = _game(seed=7), _game(seed=7)
    assert torch.equal(first.reset(), second.reset())
    actions = torch.Generator().manual_seed(4)
    for _ in range(30):
        a = _random_actions(512, actions)
        assert all(torch.equal(x, y) for x, y in zip(first.step(a), second.step(a), strict=True))
    saved = first.state_dict()
    third = _game(seed=99)  # another stream, replaced by the saved one
    third.load_state_dict(saved)
    for _ in range(30):
        a = _random_actions(512, actions)
        assert all(torch.equal(x, y) for x, y in zip(first.step(a), third.step(a), strict=True))
    assert not torch.equal(_game(seed=8).reset(), _game(seed=7).reset())


def test_scripted_paddle_that_follows_the_ball_catches_everything():
    env = _game(num_games=4096)
    env.reset()
    caught = games = 0.0
    for _ in range(3 * env.steps_per_game):
        # aim at the column the ball moves to next (seen from two consecutive screens)
        target = env.ball_col + env.ball_velocity
        target = torch.where(
            target < 0, -target, torch.where(target >= SIZE, 2 * (SIZE - 1) - target, target)
        )
        actions = torch.where(target < env.paddle, LEFT, torch.where(target > env.paddle + 1, RIGHT, STAY))
        _, reward, done = env.step(actions)
        caught += reward.sum().item()
        games += done.sum().item()
    assert games == 3 * 4096 and caught == games


def _random_agent_catch_probability(size: int) -> float:
    """Exact catch probability of uniformly random actions, by the rules of docs/catch.md.

    The ball's landing column is a fixed function of its start (column, velocity); the paddle is a clamped
    random walk from a uniform start, independent of the ball. Sum over both in float64.
    """
    steps = size - 1
    positions = size - 1  # paddle's left column in 0..size-2
    move = torch.zeros(positions, positions, dtype=torch.float64)
    for p in range(positions):
        for d in (-1, 0, 1):
            move[p, min(max(p + d, 0), positions - 1)] += 1 / 3
    paddle = torch.full((positions,), 1 / positions, dtype=torch.float64)
    for _ in range(steps):
        paddle = paddle @ move
    period = 2 * (size - 1)
    total = 0.0
    for start in range(size):
        for velocity in (-1, 1):
            unfolded = (start + velocity * steps) % period  # reflection = a triangle wave
            landing = unfolded if unfolded <= size - 1 else period - unfolded
            covering = [p for p in (landing - 1, landing) if 0 <= p < positions]
            total += paddle[covering].sum().item() / (2 * size)
    return total


def test_random_agent_catches_at_its_expected_rate():
    expected = _random_agent_catch_probability(SIZE)
    assert 0.07 < expected < 0.1  # about 2 columns of 24, a little more at the walls
    env = _game(num_games=4000, seed=5)
    env.reset()
    generator = torch.Generator().manual_seed(6)
    caught = games = 0.0
    for _ in range(10 * env.steps_per_game):
        _, reward, done = env.step(_random_actions(4000, generator))
        caught += reward.sum().item()
        games += done.sum().item()
    assert games == 40_000
    # 40,000 independent games: allow 4 standard errors (a false failure about once in 16,000 runs)
    tolerance = 4 * math.sqrt(expected * (1 - expected) / games)
    assert abs(caught / games - expected) < tolerance


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Catch(0), "num_games"),
        (lambda: Catch(2, size=3), "at least"),
        (lambda: _game(num_games=2).step(torch.tensor([0, 3])), "must be 0"),
        (lambda: _game(num_games=2).step(torch.tensor([0])), "shape"),
        (lambda: _game(num_games=2).step(torch.tensor([0.0, 1.0])), "integer"),
    ],
)
def test_bad_input_is_refused_in_one_line(make, message):
    with pytest.raises(AttentionError, match=message) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_state_of_another_game_size_is_refused():
    with pytest.raises(AttentionError, match="games of size"):
        _game(num_games=4).load_state_dict(_game(num_games=5).state_dict())
