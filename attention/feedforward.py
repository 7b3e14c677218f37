"""The paper's non-attention baselines (RAM Tables 1 and 2), on the same trainer and Rollout.

* FC: rectifier layers (paper: two of 64 or 256 units) on the whole image, then a linear classifier.
* CNN: one convolution (paper: 8 filters of 10x10, stride 5; 16 on translated 60x60) with rectifiers, one
  rectifier layer (paper: 256 units; 86 on 100x100), then the classifier.

They look at the whole image at once: ``where`` is empty (T = 0) and there is nothing for REINFORCE.
"""

from __future__ import annotations

import torch
from torch import nn

from attention import AttentionError
from attention.config import ModelConfig
from attention.linear import Linear
from attention.rollout import Rollout


def _whole_image_rollout(logits: torch.Tensor) -> Rollout:
    batch = logits.shape[0]
    empty = logits.new_zeros((0, batch))
    no_where = logits.new_zeros((0, batch, 2))
    return Rollout(logits=logits, where=no_where, where_mean=no_where, log_probs=empty, baselines=empty)


class FullyConnected(nn.Module):
    def __init__(
        self, config: ModelConfig, *, image_size: tuple[int, int], channels: int = 1, num_classes: int = 10
    ):
        super().__init__()
        if not config.fc_hidden or min(config.fc_hidden) < 1:
            raise AttentionError(
                f"model.fc_hidden needs at least one positive width, got {list(config.fc_hidden)}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * image_size[0] * image_size[1]
        for hidden in config.fc_hidden:
            layers += [Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def unroll(self, images: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None):
        return _whole_image_rollout(self.net(images))


class ConvolutionalNet(nn.Module):
    def __init__(
        self, config: ModelConfig, *, image_size: tuple[int, int], channels: int = 1, num_classes: int = 10
    ):
        super().__init__()
        kernel, stride = config.cnn_kernel, config.cnn_stride
        if min(config.cnn_filters, kernel, stride, config.cnn_hidden) < 1:
            raise AttentionError("model.cnn_filters, cnn_kernel, cnn_stride and cnn_hidden must all be >= 1")
        if kernel > min(image_size):
            raise AttentionError(
                f"model.cnn_kernel {kernel} is larger than the {image_size[0]}x{image_size[1]} image"
            )
        out_h = (image_size[0] - kernel) // stride + 1
        out_w = (image_size[1] - kernel) // stride + 1
        self.net = nn.Sequential(
            nn.Conv2d(channels, config.cnn_filters, kernel_size=kernel, stride=stride),
            nn.ReLU(),
            nn.Flatten(),
            Linear(config.cnn_filters * out_h * out_w, config.cnn_hidden),
            nn.ReLU(),
            Linear(config.cnn_hidden, num_classes),
        )

    def unroll(self, images: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None):
        return _whole_image_rollout(self.net(images))
