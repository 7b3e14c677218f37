"""Tests of attention/data/tasks.py: task defaults, placement, clutter, fixed sets and the training stream."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from attention import AttentionError
from attention.config import DataConfig
from attention.data.mnist import Mnist, load_mnist
from attention.data.tasks import (
    TrainingStream,
    _clutter_sources,
    compose,
    fixed_set,
    make_images,
    resolve,
    split_seed,
    to_float,
)

DIGIT = 28


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def constant_digits(values: list[int] | torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) digits, digit b filled with values[b]."""
    values = torch.as_tensor(values, dtype=torch.uint8)
    return values[:, None, None].expand(-1, DIGIT, DIGIT).clone()


def bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the True pixels of a 2-D mask."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


# --- resolve: defaults and refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, canvas, clutter",
    [
        (DataConfig(task="mnist"), 28, 0),
        (DataConfig(task="mnist", canvas_size=28, clutter_count=0), 28, 0),
        (DataConfig(task="translated"), 60, 0),
        (DataConfig(task="translated", canvas_size=100), 100, 0),
        (DataConfig(task="cluttered"), 60, 4),
        (DataConfig(task="cluttered", canvas_size=60), 60, 4),
        (DataConfig(task="cluttered", canvas_size=100), 100, 8),
        (DataConfig(task="cluttered", canvas_size=80, clutter_count=6), 80, 6),
        (DataConfig(task="cluttered", canvas_size=60, clutter_count=0), 60, 0),
    ],
)
def test_resolve_fills_the_task_defaults(given, canvas, clutter):
    resolved = resolve(given)
    assert (resolved.canvas_size, resolved.clutter_count) == (canvas, clutter)
    assert resolved.task == given.task and resolved.clutter_size == given.clutter_size
    assert resolve(resolved) == resolved


@pytest.mark.parametrize(
    "given, message",
    [
        (DataConfig(task="cluttred"), "unknown task 'cluttred'"),
        (DataConfig(task="translated", canvas_size=20), "smaller than a 28x28 digit"),
        (DataConfig(task="cluttered", canvas_size=27, clutter_count=1), "smaller than a 28x28 digit"),
        (DataConfig(task="mnist", canvas_size=60), "task 'mnist' is the 28x28 digits"),
        (DataConfig(task="mnist", clutter_count=4), "task 'mnist' is the 28x28 digits"),
        (DataConfig(task="translated", clutter_count=4), "task 'translated' has no clutter"),
        (DataConfig(task="cluttered", canvas_size=80), "no clutter count for canvas 80"),
        (DataConfig(task="cluttered", clutter_count=-1), "clutter_count must be >= 0"),
        (DataConfig(task="cluttered", clutter_size=0), "clutter_size must be in 1..28"),
        (DataConfig(task="cluttered", clutter_size=29), "clutter_size must be in 1..28"),
        (DataConfig(task="translated", train_limit=1), "train_limit must be >= 2"),
    ],
)
def test_resolve_refuses_impossible_settings(given, message):
    with pytest.raises(AttentionError, match=message):
        resolve(given)


# --- compose / make_images: placement --------------------------------------------------------------------


def test_mnist_task_returns_the_digits_unchanged():
    digits = torch.randint(256, (5, DIGIT, DIGIT), generator=generator(), dtype=torch.uint8)
    out = compose(digits, digits[:, :0], resolve(DataConfig(task="mnist")), generator())
    assert out.dtype == torch.uint8 and out.shape == (5, DIGIT, DIGIT)
    assert torch.equal(out, digits)


@pytest.mark.parametrize("canvas", [28, 29, 60, 100])
def test_translated_digit_lies_fully_inside_the_canvas(canvas):
    data = resolve(DataConfig(task="translated", canvas_size=canvas))
    digits = constant_digits([255] * 64)
    out = compose(digits, digits[:, :0], data, generator())
    assert out.dtype == torch.uint8 and out.shape == (64, canvas, canvas)
    for image in out:
        assert int((image > 0).sum()) == DIGIT * DIGIT
        assert bounding_box(image > 0)[2:] == (DIGIT, DIGIT)
        assert int(image.sum(dtype=torch.int64)) == 255 * DIGIT * DIGIT


def test_translated_digit_is_pasted_unchanged():
    data = resolve(DataConfig(task="translated", canvas_size=60))
    digits = torch.randint(1, 256, (16, DIGIT, DIGIT), generator=generator(1), dtype=torch.uint8)
    out = compose(digits, digits[:, :0], data, generator())
    for image, digit in zip(out, digits, strict=True):
        top, left, _, _ = bounding_box(image > 0)
        assert torch.equal(image[top : top + DIGIT, left : left + DIGIT], digit)


def test_placements_vary_and_reach_every_edge_of_the_canvas():
    canvas = 60
    data = resolve(DataConfig(task="translated", canvas_size=canvas))
    digits = constant_digits([255] * 1000)
    out = compose(digits, digits[:, :0], data, generator())
    corners = torch.tensor([bounding_box(image > 0)[:2] for image in out])
    assert len({tuple(c) for c in corners.tolist()}) > 500
    assert corners.min().item() == 0
    assert corners[:, 0].max().item() == canvas - DIGIT and corners[:, 1].max().item() == canvas - DIGIT


# --- clutter ---------------------------------------------------------------------------------------------


PIECE_VALUES = [40, 80, 120, 200]


def cluttered(batch: int, *, count: int = 4, piece: int = 8, digit_value: int = 0, canvas: int = 60):
    """Compose blank (or constant) digits with sources whose pixels are distinct constant values."""
    data = resolve(DataConfig(task="cluttered", canvas_size=canvas, clutter_count=count, clutter_size=piece))
    digits = constant_digits([digit_value] * batch)
    values = torch.tensor(PIECE_VALUES[:count], dtype=torch.uint8)
    sources = values[None, :, None, None].expand(batch, count, DIGIT, DIGIT).clone()
    return compose(digits, sources, data, generator())


@pytest.mark.parametrize("piece", [1, 8, 28])
def test_highest_clutter_piece_appears_as_one_full_square(piece):
    out = cluttered(1000, piece=piece)
    tops, lefts = [], []
    for image in out:
        mask = image == max(PIECE_VALUES)
        assert int(mask.sum()) == piece * piece
        top, left, height, width = bounding_box(mask)
        assert (height, width) == (piece, piece)
        tops.append(top)
        lefts.append(left)
    # Pieces fall anywhere fully inside the canvas, including its edges.
    assert min(tops) == 0 and min(lefts) == 0
    assert max(tops) == 60 - piece and max(lefts) == 60 - piece


def test_clutter_covers_at_most_count_pieces_of_clutter_size():
    out = cluttered(200)
    nonzero = (out > 0).flatten(1).sum(dim=1)
    assert nonzero.max().item() <= 4 * 8 * 8
    assert nonzero.min().item() >= 8 * 8
    assert set(torch.unique(out).tolist()) <= {0, *PIECE_VALUES}


def test_clutter_count_zero_adds_nothing():
    assert int(cluttered(50, count=0).count_nonzero()) == 0


def test_clutter_never_erases_digit_strokes():
    out = cluttered(100, digit_value=255)
    for image in out:
        mask = image == 255
        assert int(mask.sum()) == DIGIT * DIGIT
        assert bounding_box(mask)[2:] == (DIGIT, DIGIT)


def test_clutter_piece_is_a_square_cut_from_its_source():
    piece = 8
    data = resolve(DataConfig(task="cluttered", canvas_size=60, clutter_count=1, clutter_size=piece))
    pattern = (1 + torch.arange(DIGIT * DIGIT) % 255).to(torch.uint8).reshape(DIGIT, DIGIT)  # no zeros
    sources = pattern.expand(20, 1, DIGIT, DIGIT).clone()
    out = compose(constant_digits([0] * 20), sources, data, generator())
    windows = {
        pattern[r : r + piece, c : c + piece].numpy().tobytes()
        for r in range(DIGIT - piece + 1)
        for c in range(DIGIT - piece + 1)
    }
    for image in out:
        top, left, height, width = bounding_box(image > 0)
        assert (height, width) == (piece, piece)
        assert image[top : top + piece, left : left + piece].numpy().tobytes() in windows


def test_task_images_are_uint8_and_to_float_gives_unit_range_channels():
    images = torch.randint(256, (30, DIGIT, DIGIT), generator=generator(), dtype=torch.uint8)
    data = resolve(DataConfig(task="cluttered", canvas_size=60))
    out = make_images(images, torch.arange(10), data, generator())
    assert out.dtype == torch.uint8 and out.shape == (10, 60, 60)
    floats = to_float(out)
    assert floats.dtype == torch.float32 and floats.shape == (10, 1, 60, 60)
    assert floats.min().item() >= 0.0 and floats.max().item() <= 1.0
    torch.testing.assert_close(floats[:, 0] * 255.0, out.float())


def test_clutter_sources_never_pick_the_image_itself():
    n = 12
    images = constant_digits(list(range(n)))
    own = torch.arange(n).repeat(50)
    sources = _clutter_sources(images, own, 6, generator())
    assert sources.shape == (len(own), 6, DIGIT, DIGIT)
    picked = sources[:, :, 0, 0].long()
    assert not (picked == own[:, None]).any()
    for i in range(n):  # every other image is a possible source
        assert set(picked[own == i].flatten().tolist()) == set(range(n)) - {i}


def test_with_two_images_clutter_comes_from_the_other():
    images = constant_digits([7, 9])
    sources = _clutter_sources(images, torch.tensor([0, 1, 0, 1]), 3, generator())
    assert sources[:, :, 0, 0].tolist() == [[9] * 3, [7] * 3, [9] * 3, [7] * 3]


# --- fixed validation and test sets ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mnist() -> Mnist:
    """Synthetic MNIST: 40 training digits of constant value 5 * (i + 1), 300 random test digits."""
    rng = np.random.default_rng(0)
    n_train = 40
    train_images = np.repeat(5 * np.arange(1, n_train + 1, dtype=np.uint8), DIGIT * DIGIT)
    return Mnist(
        train_images=train_images.reshape(n_train, DIGIT, DIGIT),
        train_labels=np.arange(n_train, dtype=np.int64) % 10,
        test_images=rng.integers(0, 256, (300, DIGIT, DIGIT), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 300).astype(np.int64),
    )


CLUTTERED = DataConfig(task="cluttered", canvas_size=60)


def test_same_seed_gives_a_byte_identical_fixed_set(small_mnist):
    first = fixed_set(small_mnist, CLUTTERED, "test")
    second = fixed_set(small_mnist, CLUTTERED, "test")
    assert first.images.dtype == torch.uint8 and first.images.shape == (300, 60, 60)
    assert first.images.numpy().tobytes() == second.images.numpy().tobytes()
    assert first.labels.numpy().tobytes() == second.labels.numpy().tobytes()


def test_spelled_out_defaults_give_the_same_fixed_set(small_mnist):
    implicit = fixed_set(small_mnist, DataConfig(task="cluttered"), "test")
    explicit = fixed_set(small_mnist, DataConfig(task="cluttered", canvas_size=60, clutter_count=4), "test")
    assert digest(implicit.images) == digest(explicit.images)


def test_another_test_seed_draws_other_images_with_the_same_labels(small_mnist):
    first = fixed_set(small_mnist, CLUTTERED, "test")
    other = fixed_set(small_mnist, DataConfig(task="cluttered", canvas_size=60, test_seed=3), "test")
    assert digest(first.images) != digest(other.images)
    assert torch.equal(first.labels, other.labels)
    assert torch.equal(first.labels, torch.from_numpy(small_mnist.test_labels))


def test_validation_seed_does_not_change_the_test_set(small_mnist):
    first = fixed_set(small_mnist, CLUTTERED, "test")
    other = fixed_set(small_mnist, DataConfig(task="cluttered", canvas_size=60, validation_seed=9), "test")
    assert digest(first.images) == digest(other.images)


def test_split_seed_depends_on_task_parameters_split_and_seed():
    base = resolve(CLUTTERED)
    seeds = {
        split_seed(base, "test", 2),
        split_seed(base, "validation", 2),
        split_seed(base, "test", 3),
        split_seed(resolve(DataConfig(task="cluttered", canvas_size=100)), "test", 2),
        split_seed(resolve(DataConfig(task="cluttered", canvas_size=60, clutter_count=5)), "test", 2),
        split_seed(resolve(DataConfig(task="cluttered", canvas_size=60, clutter_size=6)), "test", 2),
        split_seed(resolve(DataConfig(task="translated", canvas_size=60)), "test", 2),
    }
    assert len(seeds) == 7
    assert split_seed(base, "test", 2) == split_seed(resolve(CLUTTERED), "test", 2)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_fixed_sets_exist_only_for_validation_and_test(small_mnist):
    with pytest.raises(AttentionError, match="not 'train'"):
        fixed_set(small_mnist, CLUTTERED, "train")


def test_fixed_set_batches_are_float_channels_with_labels(small_mnist):
    test = fixed_set(small_mnist, CLUTTERED, "test")
    batches = list(test.batches(128))
    assert [len(labels) for _, labels in batches] == [128, 128, 44]
    images, labels = batches[-1]
    assert images.shape == (44, 1, 60, 60) and images.dtype == torch.float32
    assert torch.equal(labels, test.labels[256:])


@pytest.mark.mnist
def test_real_cluttered_test_set_is_identical_across_processes(mnist_dir):
    script = (
        "import hashlib, sys\n"
        "from attention.config import DataConfig\n"
        "from attention.data.mnist import load_mnist\n"
        "from attention.data.tasks import fixed_set\n"
        "s = fixed_set(load_mnist(sys.argv[1]), DataConfig(task='cluttered', canvas_size=60), 'test')\n"
        "print(hashlib.sha256(s.images.numpy().tobytes() + s.labels.numpy().tobytes()).hexdigest())\n"
    )
    # The other process runs while this one builds the same set.
    command = [sys.executable, "-c", script, str(mnist_dir)]
    other = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    test = fixed_set(load_mnist(mnist_dir), DataConfig(task="cluttered", canvas_size=60), "test")
    assert test.images.shape == (10000, 60, 60)
    here = hashlib.sha256(test.images.numpy().tobytes() + test.labels.numpy().tobytes()).hexdigest()
    stdout, _ = other.communicate(timeout=120)
    assert other.returncode == 0
    assert stdout.strip() == here


# --- the training stream ---------------------------------------------------------------------------------


TRANSLATED = DataConfig(task="translated", canvas_size=40)


def epoch_tensors(stream: TrainingStream, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(stream.epoch(batch_size))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def test_training_epoch_covers_every_digit_once_with_its_label(small_mnist):
    stream = TrainingStream(small_mnist, TRANSLATED, generator(0))
    assert len(stream) == 40
    batches = list(stream.epoch(16))
    assert [len(labels) for _, labels in batches] == [16, 16, 8]
    images = torch.cat([b for b, _ in batches])
    labels = torch.cat([lab for _, lab in batches])
    assert images.dtype == torch.uint8 and images.shape == (40, 40, 40)
    used = images.flatten(1).max(dim=1).values.long() // 5 - 1  # training digit i has value 5 * (i + 1)
    assert sorted(used.tolist()) == list(range(40))
    assert torch.equal(labels, torch.from_numpy(small_mnist.train_labels)[used])


def test_two_training_epochs_give_different_images(small_mnist):
    stream = TrainingStream(small_mnist, CLUTTERED, generator(0))
    first, _ = epoch_tensors(stream)
    second, _ = epoch_tensors(stream)
    assert digest(first) != digest(second)


def test_same_generator_seed_gives_identical_batches(small_mnist):
    one = TrainingStream(small_mnist, CLUTTERED, generator(5))
    two = TrainingStream(small_mnist, CLUTTERED, generator(5))
    for (images_a, labels_a), (images_b, labels_b) in zip(one.epoch(16), two.epoch(16), strict=True):
        assert images_a.numpy().tobytes() == images_b.numpy().tobytes()
        assert torch.equal(labels_a, labels_b)


def test_restoring_the_generator_state_resumes_the_stream(small_mnist):
    stream = TrainingStream(small_mnist, CLUTTERED, generator(5))
    epoch_tensors(stream)
    state = stream.generator.get_state()
    expected, _ = epoch_tensors(stream)
    resumed_generator = torch.Generator()
    resumed_generator.set_state(state)
    resumed, _ = epoch_tensors(TrainingStream(small_mnist, CLUTTERED, resumed_generator))
    assert digest(resumed) == digest(expected)


def test_train_limit_uses_only_the_first_training_digits(small_mnist):
    data = DataConfig(task="translated", canvas_size=40, train_limit=10)
    stream = TrainingStream(small_mnist, data, generator(0))
    assert len(stream) == 10
    images, _ = epoch_tensors(stream, batch_size=4)
    used = images.flatten(1).max(dim=1).values.long() // 5 - 1
    assert sorted(used.tolist()) == list(range(10))


def test_training_clutter_is_cut_from_training_digits_only(small_mnist):
    stream = TrainingStream(small_mnist, CLUTTERED, generator(0))
    images, _ = epoch_tensors(stream)
    assert set(torch.unique(images).tolist()) <= {0, *range(5, 201, 5)}


def test_training_clutter_comes_only_from_the_digits_within_train_limit(small_mnist):
    data = DataConfig(task="cluttered", canvas_size=60, train_limit=10)
    images, _ = epoch_tensors(TrainingStream(small_mnist, data, generator(0)))
    assert set(torch.unique(images).tolist()) <= {0, *range(5, 51, 5)}


def test_each_task_names_its_objective_and_shows_it_in_percent():
    from attention.tasks import TASKS

    classify, catch = TASKS.get("mnist"), TASKS.get("catch")
    assert "error" in classify.selection_label and classify.selection_percent(2.5) == 2.5
    # a game's selection value is its miss rate, a fraction
    assert "miss rate" in catch.selection_label and catch.selection_percent(0.12) == pytest.approx(12.0)
