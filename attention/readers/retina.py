"""RAM's retina-like glimpse sensor (Mnih et al. 2014, sec. 4, "Retina and location encodings").

Locations are (x, y) in [-1, 1]^2 with (0, 0) the image centre and (-1, -1) the top-left corner: x moves
across columns, y across rows. In continuous pixel coordinates (pixel j spans [j, j + 1)) the centre is
c_x = (x + 1) / 2 * W, c_y = (y + 1) / 2 * H. A patch of width w starts at round(c - w / 2) (halves round
up), so an even patch at (0, 0) is centred exactly on the image centre.
"""

from __future__ import annotations

import torch
from torch import nn

from attention import AttentionError


def _patch_start(centre: torch.Tensor, width: int) -> torch.Tensor:
    return torch.floor(centre - width / 2 + 0.5).long()


def glimpse(
    images: torch.Tensor, locations: torch.Tensor, *, patch_size: int, num_scales: int
) -> torch.Tensor:
    """Extract the retina representation rho(x, l).

    Args:
        images: (B, C, H, W).
        locations: (B, 2) as (x, y) in [-1, 1] (values outside read zeros beyond the border).
        patch_size: g_w, the side of the first patch and of every returned patch.
        num_scales: k; patch s (0-based) is g_w * 2**s pixels wide, area-averaged down to g_w x g_w.

    Returns:
        (B, k, C, g_w, g_w). Pixels outside the image read as zero.

    Only the returned pixels are touched: one batched gather per scale, no padding or copy of the image,
    so the cost does not depend on H or W.
    """
    if images.dim() != 4 or locations.shape != (images.shape[0], 2):
        raise ValueError(
            f"expected images (B, C, H, W) and locations (B, 2), got {tuple(images.shape)} "
            f"and {tuple(locations.shape)}"
        )
    batch, channels, height, width = images.shape
    flat = images.reshape(batch, channels, height * width)
    centre_x = (locations[:, 0].detach() + 1) * (width / 2)
    centre_y = (locations[:, 1].detach() + 1) * (height / 2)
    scales = []
    for scale in range(num_scales):
        factor = 2**scale
        side = patch_size * factor
        offsets = torch.arange(side, device=images.device)
        rows = _patch_start(centre_y, side)[:, None] + offsets  # (B, side)
        cols = _patch_start(centre_x, side)[:, None] + offsets  # (B, side)
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        index = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
        index = index.reshape(batch, 1, side * side).expand(batch, channels, side * side)
        patch = flat.gather(2, index) * inside.reshape(batch, 1, side * side).to(images.dtype)
        if factor > 1:  # area averaging: mean of each factor x factor block
            patch = patch.reshape(batch, channels, patch_size, factor, patch_size, factor).mean(dim=(3, 5))
        scales.append(patch.reshape(batch, channels, patch_size, patch_size))
    return torch.stack(scales, dim=1)


class RetinaReader(nn.Module):
    """The glimpse sensor as a reader: flattened rho(x, l), of size k * C * g_w * g_w."""

    where_dim = 2
    differentiable = False

    def __init__(
        self,
        *,
        image_size: tuple[int, int],
        channels: int,
        patch_size: int,
        num_scales: int,
        **_unused: object,
    ):
        super().__init__()
        if patch_size < 1 or num_scales < 1:
            raise AttentionError(
                f"retina needs patch_size >= 1 and num_scales >= 1, got {patch_size}, {num_scales}"
            )
        widest = patch_size * 2 ** (num_scales - 1)
        # Past four times the image a retina's coarsest scale is almost all padding: surely a mistake.
        if widest > 4 * max(image_size):
            raise AttentionError(
                f"retina's widest patch is {widest} px on a {image_size[0]}x{image_size[1]} image; "
                f"use fewer scales or a smaller patch (at most {4 * max(image_size)} px wide)"
            )
        self.patch_size = patch_size
        self.num_scales = num_scales
        self.out_dim = num_scales * channels * patch_size * patch_size

    def forward(self, images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        patches = glimpse(images, where, patch_size=self.patch_size, num_scales=self.num_scales)
        return patches.flatten(1)
