"""The RAM paper's image tasks (sec. 4.1) as seeded, vectorized generators.

* ``mnist``: the 28x28 centred digits.
* ``translated``: the digit at a uniformly random position, fully inside a blank S x S canvas.
* ``cluttered``: as translated, plus ``clutter_count`` square pieces (``clutter_size`` wide) cut at random
  offsets from other random digits of the same split, each fully inside the canvas at a uniformly random
  position (it may overlap the digit). Pieces and digit are composited by pixel-wise maximum, so values stay
  in [0, 1] and clutter never erases digit strokes.

Training images are drawn afresh every epoch from a seeded generator. Validation and test sets are fixed
functions of (task parameters, split, seed); see docs/data.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from attention import AttentionError
from attention.config import DataConfig
from attention.data.mnist import Mnist

TASKS = ("mnist", "translated", "cluttered")
DIGIT_SIZE = 28
# The paper's clutter counts by canvas size (sec. 4.1, Table 2).
PAPER_CLUTTER = {60: 4, 100: 8}
# Fixed sets are generated in chunks to bound peak memory on large canvases.
CHUNK = 2000


def resolve(data: DataConfig) -> DataConfig:
    """Fill the task's defaults and refuse impossible settings, so results record every number."""
    if data.task not in TASKS:
        raise AttentionError(f"unknown task '{data.task}'; use one of {', '.join(TASKS)}")
    if data.train_limit is not None and data.train_limit < 2:
        raise AttentionError(f"data.train_limit must be >= 2 or none, got {data.train_limit}")
    if data.eval_limit is not None and data.eval_limit < 1:
        raise AttentionError(f"data.eval_limit must be >= 1 or none, got {data.eval_limit}")
    if data.task == "mnist":
        if data.canvas_size not in (None, DIGIT_SIZE) or data.clutter_count not in (None, 0):
            raise AttentionError(
                "task 'mnist' is the 28x28 digits; use task 'translated' or 'cluttered' "
                "for another canvas size or clutter"
            )
        return dataclasses.replace(data, canvas_size=DIGIT_SIZE, clutter_count=0)
    size = 60 if data.canvas_size is None else data.canvas_size
    if size < DIGIT_SIZE:
        raise AttentionError(f"data.canvas_size {size} is smaller than a {DIGIT_SIZE}x{DIGIT_SIZE} digit")
    if data.task == "translated":
        if data.clutter_count not in (None, 0):
            raise AttentionError("task 'translated' has no clutter; use task 'cluttered' with clutter_count")
        return dataclasses.replace(data, canvas_size=size, clutter_count=0)
    count = data.clutter_count
    if count is None:
        if size not in PAPER_CLUTTER:
            raise AttentionError(f"the paper sets no clutter count for canvas {size}; set data.clutter_count")
        count = PAPER_CLUTTER[size]
    if count < 0:
        raise AttentionError(f"data.clutter_count must be >= 0, got {count}")
    if not 1 <= data.clutter_size <= DIGIT_SIZE:
        raise AttentionError(f"data.clutter_size must be in 1..{DIGIT_SIZE}, got {data.clutter_size}")
    return dataclasses.replace(data, canvas_size=size, clutter_count=count)


def _paste_indices(rows: torch.Tensor, cols: torch.Tensor, size: int, canvas: int) -> torch.Tensor:
    """Flat canvas indices of a ``size`` x ``size`` square at top-left (rows, cols): (B, size*size)."""
    offsets = torch.arange(size)
    r = rows[:, None, None] + offsets[None, :, None]  # (B, size, 1)
    c = cols[:, None, None] + offsets[None, None, :]  # (B, 1, size)
    return (r * canvas + c).reshape(rows.shape[0], size * size)


def compose(
    digits: torch.Tensor,
    sources: torch.Tensor,
    data: DataConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Make a batch of task images from uint8 ``digits`` (B, 28, 28).

    ``sources`` (B, clutter_count, 28, 28) are the digits clutter is cut from. Returns uint8 (B, S, S).
    Everything is batched tensor indexing: no Python loop over images or pieces.
    """
    batch = digits.shape[0]
    size = data.canvas_size
    if data.task == "mnist":
        return digits.clone()
    span = size - DIGIT_SIZE + 1
    top = torch.randint(span, (batch,), generator=generator)
    left = torch.randint(span, (batch,), generator=generator)
    canvas = torch.zeros(batch, size * size, dtype=torch.uint8)
    canvas.scatter_(1, _paste_indices(top, left, DIGIT_SIZE, size), digits.reshape(batch, -1))
    count, piece = data.clutter_count, data.clutter_size
    if count:
        n = batch * count
        cut_span = DIGIT_SIZE - piece + 1
        cut_top = torch.randint(cut_span, (n,), generator=generator)
        cut_left = torch.randint(cut_span, (n,), generator=generator)
        flat_sources = sources.reshape(n, DIGIT_SIZE * DIGIT_SIZE)
        pieces = flat_sources.gather(1, _paste_indices(cut_top, cut_left, piece, DIGIT_SIZE))  # (n, p*p)
        place_span = size - piece + 1
        at_top = torch.randint(place_span, (n,), generator=generator)
        at_left = torch.randint(place_span, (n,), generator=generator)
        index = _paste_indices(at_top, at_left, piece, size).reshape(batch, count * piece * piece)
        canvas.scatter_reduce_(1, index, pieces.reshape(batch, -1), reduce="amax")
    return canvas.reshape(batch, size, size)


def _clutter_sources(
    images: torch.Tensor, own: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """Digits to cut clutter from: ``count`` random images of the split other than each image itself."""
    n = images.shape[0]
    if count == 0:
        return images.new_zeros((own.shape[0], 0, DIGIT_SIZE, DIGIT_SIZE))
    # Draw from the n - 1 others: shift draws at or above the own index by one.
    picks = torch.randint(n - 1, (own.shape[0], count), generator=generator)
    picks = picks + (picks >= own[:, None]).long()
    return images[picks]


def make_images(
    images: torch.Tensor, index: torch.Tensor, data: DataConfig, generator: torch.Generator
) -> torch.Tensor:
    """Task images (uint8, (B, S, S)) for the digits ``images[index]`` of one split."""
    sources = _clutter_sources(images, index, data.clutter_count, generator)
    return compose(images[index], sources, data, generator)


def split_seed(data: DataConfig, split: str, seed: int) -> int:
    """A generator seed that is a fixed function of the task parameters, the split and the seed."""
    key = f"{data.task}|{data.canvas_size}|{data.clutter_count}|{data.clutter_size}|{split}|{seed}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class FixedSet:
    """A fixed evaluation set: uint8 images (N, S, S) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            yield to_float(self.images[start:stop], device), self.labels[start:stop].to(device)


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, S, S) -> float32 (B, 1, S, S) in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)


def fixed_set(mnist: Mnist, data: DataConfig, split: str) -> FixedSet:
    """The validation or test set of a task: byte-identical for the same task parameters and seed."""
    data = resolve(data)
    if split not in ("validation", "test"):
        raise AttentionError(f"fixed sets exist for 'validation' and 'test', not '{split}'")
    digits, labels = (torch.from_numpy(np.ascontiguousarray(a)) for a in mnist.split(split))
    digits, labels = digits[: data.eval_limit], labels[: data.eval_limit]  # None keeps them all
    seed = data.validation_seed if split == "validation" else data.test_seed
    generator = torch.Generator().manual_seed(split_seed(data, split, seed))
    parts = [
        make_images(digits, torch.arange(start, min(start + CHUNK, len(labels))), data, generator)
        for start in range(0, len(labels), CHUNK)
    ]
    return FixedSet(torch.cat(parts), labels.clone())


class TrainingStream:
    """Training batches drawn afresh every epoch: a new order, placements and clutter each time.

    The randomness comes only from ``generator``; saving and restoring its state resumes the stream.
    """

    def __init__(self, mnist: Mnist, data: DataConfig, generator: torch.Generator):
        self.data = resolve(data)
        digits, labels = mnist.split("train")
        if self.data.train_limit is not None:
            digits, labels = digits[: self.data.train_limit], labels[: self.data.train_limit]
        self.digits = torch.from_numpy(np.ascontiguousarray(digits))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))
        self.generator = generator

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield uint8 images (B, S, S) and labels (B,) covering the split once in a random order."""
        order = torch.randperm(len(self.labels), generator=self.generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield make_images(self.digits, index, self.data, self.generator), self.labels[index]
