"""DRAW's differentiable read: an N x N grid of Gaussian filters (Gregor et al. 2015, sec. 3.1).

Pure functions plus a thin reader module. Coordinates follow the paper: image columns a = 1..A (A = W) and
rows b = 1..B (B = H) are 1-based, so the centre g-tilde = 0 maps to (A + 1) / 2, the middle pixel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attention import AttentionError

# |log sigma^2|, |log delta~| and |log gamma| beyond this saturate (exp(10) ~ 2.2e4).
LOG_LIMIT = 10.0

# A filter weight below exp(-34.5) ~ 1e-15 of the filter's largest is set to exactly zero. Pixels lie in
# [0, 1], so such a weight moves a read by less than 1e-15 per pixel, far below what the glimpse network
# resolves. Left in, the Gaussian's tails reach float32's denormal range (below 1.2e-38), where x86 CPUs
# take a slow microcode path for every operation that touches them: a soft-reader training step ran 1.4x
# (real data) to 1.8x (random images) slower for it (docs/performance.md). Flushing denormals to zero
# (torch.set_flush_denormal) would also do, but only on the calling thread, not on PyTorch's other threads.
NEGLIGIBLE_LOG_WEIGHT = -34.5


def filter_centres(g: torch.Tensor, delta: torch.Tensor, grid_size: int) -> torch.Tensor:
    """mu^i = g + (i - N/2 - 0.5) * delta for i = 1..N (DRAW eq. (19); the paper's i is 1-based).

    g, delta: (B,). Returns (B, N).
    """
    i = torch.arange(1, grid_size + 1, device=g.device, dtype=g.dtype)
    return g[:, None] + (i - grid_size / 2 - 0.5)[None, :] * delta[:, None]


def filterbank(centres: torch.Tensor, variance: torch.Tensor, length: int) -> torch.Tensor:
    """F[i, a] = exp(-(a - mu^i)^2 / (2 sigma^2)) / Z_i over pixels a = 1..length (DRAW eqs. (25), (26)),
    with the weights below 1e-15 of each filter's largest set to zero (``NEGLIGIBLE_LOG_WEIGHT``).

    centres: (B, N); variance: (B,) sigma^2. Returns (B, N, length); each row sums to one.
    """
    a = torch.arange(1, length + 1, device=centres.device, dtype=centres.dtype)
    logits = -((a[None, None, :] - centres[:, :, None]) ** 2) / (2 * variance[:, None, None])
    # the row's largest logit is only compared with, never differentiated
    largest = logits.detach().amax(dim=2, keepdim=True)
    logits = logits.masked_fill(logits < largest + NEGLIGIBLE_LOG_WEIGHT, float("-inf"))
    # softmax = exp / Z computed in log space: exact normalisation even for filters far off the image,
    # where exp() underflows
    return torch.softmax(logits, dim=2)


def window(where: torch.Tensor, *, height: int, width: int, grid_size: int) -> dict[str, torch.Tensor]:
    """Decode (g~x, g~y, log sigma^2, log delta~, log gamma) (B, 5) into the window (DRAW eqs. (21)-(24)).

    Returns centre ``gx``, ``gy`` (1-based pixels), ``delta`` (stride), ``variance`` and ``gamma``, each (B,).
    """
    if where.dim() != 2 or where.shape[1] != 5:
        raise ValueError(f"filterbank where must be (B, 5), got {tuple(where.shape)}")
    gx_tilde, gy_tilde, log_variance, log_delta_tilde, log_gamma = where.unbind(dim=1)
    # Numerical guard: the logs are clamped before exp, so an extreme where-head output (a ReLU core's h is
    # unbounded) saturates instead of giving sigma^2 = 0 or gamma = inf and a NaN read; inside the range
    # these are DRAW's equations exactly.
    log_variance, log_delta_tilde, log_gamma = (
        v.clamp(-LOG_LIMIT, LOG_LIMIT) for v in (log_variance, log_delta_tilde, log_gamma)
    )
    gx = (width + 1) / 2 * (gx_tilde + 1)
    gy = (height + 1) / 2 * (gy_tilde + 1)
    delta = (max(width, height) - 1) / max(grid_size - 1, 1) * torch.exp(log_delta_tilde)
    return {
        "gx": gx,
        "gy": gy,
        "delta": delta,
        "variance": torch.exp(log_variance),
        "gamma": torch.exp(log_gamma),
    }


def read(images: torch.Tensor, where: torch.Tensor, *, grid_size: int) -> torch.Tensor:
    """gamma * F_Y x F_X^T per channel (DRAW eq. (27)). images (B, C, H, W) -> (B, C, N, N)."""
    _batch, _channels, height, width = images.shape
    w = window(where, height=height, width=width, grid_size=grid_size)
    f_x = filterbank(filter_centres(w["gx"], w["delta"], grid_size), w["variance"], width)  # (B, N, W)
    f_y = filterbank(filter_centres(w["gy"], w["delta"], grid_size), w["variance"], height)  # (B, N, H)
    # (B, N, H) @ (B, C, H, W) @ (B, W, N) -> (B, C, N, N)
    patches = f_y[:, None] @ images @ f_x.transpose(1, 2)[:, None]
    return w["gamma"][:, None, None, None] * patches


class FilterbankReader(nn.Module):
    """The DRAW read as a reader: flattened gamma * F_Y x F_X^T, of size C * N * N.

    Its cost is O(N * H * W) per channel: it grows with the pixel count, unlike the retina's.
    """

    where_dim = 5
    differentiable = True

    def __init__(self, *, image_size: tuple[int, int], channels: int, grid_size: int, **_unused: object):
        super().__init__()
        if grid_size < 1:
            raise AttentionError(f"filterbank needs grid_size >= 1, got {grid_size}")
        self.grid_size = grid_size
        self.out_dim = channels * grid_size * grid_size
        self.image_size = image_size

    def initial_where(self) -> torch.Tensor:
        """The where-head's starting bias: the grid spans the whole image (g~ = 0, delta~ = 1), gamma = 1,
        and sigma = delta / 2, so neighbouring filters overlap and the first read is a blurred view of the
        whole image. With sigma = 1 a 12 x 12 grid on 100 x 100 pixels samples isolated pixels 9 apart,
        reads almost nothing of a thin digit and gives the window no gradient to learn from."""
        height, width = self.image_size
        delta = (max(height, width) - 1) / max(self.grid_size - 1, 1)
        return torch.tensor([0.0, 0.0, 2 * math.log(max(delta / 2, 0.5)), 0.0, 0.0])

    def forward(self, images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return read(images, where, grid_size=self.grid_size).flatten(1)
