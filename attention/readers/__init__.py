"""Readers: how a model looks at an image.

Every reader is an ``nn.Module`` built with keyword arguments ``image_size`` (H, W), ``channels`` and its
own settings, and declares:

* ``out_dim``: the length of the vector it returns per image;
* ``where_dim``: how many numbers tell it where to look (2 for a retina's (x, y), 5 for DRAW's window);
* ``differentiable``: whether gradients flow from its output to its where-input (decides the where-head:
  stochastic + REINFORCE for non-differentiable readers, deterministic + backprop otherwise).

``reader(images (B, C, H, W), where (B, where_dim)) -> (B, out_dim)``.
"""

from attention.readers.filterbank import FilterbankReader
from attention.readers.retina import RetinaReader
from attention.registry import Registry

READERS = Registry("reader")
READERS.register("retina")(RetinaReader)
READERS.register("filterbank")(FilterbankReader)

__all__ = ["READERS", "FilterbankReader", "RetinaReader"]
