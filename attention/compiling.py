"""What ``train.compile`` compiles, decided in one place for training, the bench and the tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attention.config import Config
from attention.heads import WHERE_HEADS

# torch.compile mode of the compiled unroll (see training_unroll): the default. "reduce-overhead" (CUDA
# graphs) would also take the kernel launches off a GPU step, but crashed the process (segmentation fault)
# on an H100 with PyTorch 2.11.
COMPILE_MODE: str | None = None


def compiled_part(config: Config) -> str | None:
    """What ``train.compile`` compiles for this config: ``"unroll"`` for a RAM whose where-head draws no
    random numbers (the soft reader), ``"sensor"`` for a retina (its sampling policy breaks a whole-unroll
    graph), else None. The one place that decides it: training, the bench and the tables ask here."""
    m = config.model
    if not config.train.compile or m.name != "ram":
        return None
    if not WHERE_HEADS.get(m.where.policy).stochastic:
        return "unroll"
    return "sensor" if m.reader.name == "retina" else None


def training_unroll(model: torch.nn.Module, config: Config) -> Callable[..., Any]:
    """What a classification training step calls for its rollout: ``unroll(images, generator)`` with
    sampling.

    With ``train.compile`` a model whose unroll draws no random numbers (a deterministic where-head: the
    soft reader) runs it torch.compile'd as one graph. That removes most of the per-operation cost of a
    small recurrent model, which is what bounds a step on a GPU (``COMPILE_MODE``). A stochastic
    model keeps the eager unroll (its sampling generator breaks the graph) and compiles the retina's sensor
    only (:func:`make_model`).
    """
    if compiled_part(config) == "unroll":
        compiled = torch.compile(
            lambda images: model.unroll(images, sample=True, generator=None),
            dynamic=True,  # one graph for the full batches and the last, smaller one
            mode=COMPILE_MODE,
        )
        return lambda images, generator: compiled(images)
    return lambda images, generator: model.unroll(images, sample=True, generator=generator)
