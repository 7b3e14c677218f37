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


def _read_square(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side`` x ``side`` squares at (top, left) of each image, zero outside: (B, C, side, side).

    One ``index_select`` on the flattened batch with clamped indices (so it stays in bounds without padding
    or copying the image), then the pixels that lie outside are zeroed by row and column masks.
    """
    batch, channels, height, width = images.shape
    # 32-bit indices whenever they can address the batch: writing the (B, C, side, side) index costs as much
    # as the gather itself, and half the bytes make it about 4x cheaper on CPU.
    index_type = torch.int32 if images.numel() < 2**31 else torch.int64
    offsets = torch.arange(side, device=images.device, dtype=index_type)
    # a square starting further out than this lies wholly outside either way; the clamp keeps far-off
    # locations from overflowing the 32-bit arithmetic
    rows = top.clamp(-side, height).to(index_type)[:, None] + offsets  # (B, side)
    cols = left.clamp(-side, width).to(index_type)[:, None] + offsets  # (B, side)
    # flat index = image * H * W + row * W + col, built from (B, C, side) and (B, side) parts so that only
    # the final sum has the full (B, C, side, side) size
    image_start = torch.arange(batch * channels, device=images.device, dtype=index_type).view(
        batch, channels, 1
    )
    image_start = image_start * (height * width)
    row_start = image_start + rows.clamp(0, height - 1)[:, None, :] * width  # (B, C, side)
    index = row_start[:, :, :, None] + cols.clamp(0, width - 1)[:, None, None, :]  # (B, C, side, side)
    patch = images.reshape(-1).index_select(0, index.view(-1)).view(batch, channels, side, side)
    row_inside = ((rows >= 0) & (rows < height)).to(images.dtype)
    col_inside = ((cols >= 0) & (cols < width)).to(images.dtype)
    return patch.mul_(row_inside[:, None, :, None]).mul_(col_inside[:, None, None, :])


def _area_pool(patch: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean of each ``factor`` x ``factor`` block: (B, C, n*f, n*f) -> (B, C, n, n).

    Rows first, then columns: the ``factor`` rows of a block are whole contiguous rows of a reshaped view,
    so that sum streams through memory, and only the 1/factor-size result is read with a column stride. Tiny
    reductions over reshaped axes (or avg_pool2d) are several times slower on CPU.
    """
    if factor == 1:
        return patch
    batch, channels, rows, cols = patch.shape
    blocks = patch.reshape(batch, channels, rows // factor, factor, cols)
    row_sum = blocks[:, :, :, 0].clone()
    for i in range(1, factor):
        row_sum.add_(blocks[:, :, :, i])
    total = row_sum[..., 0::factor].clone()
    for j in range(1, factor):
        total.add_(row_sum[..., j::factor])
    return total.mul_(1.0 / (factor * factor))


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

    Only the returned pixels are touched (no padding or copy of the image), so the cost does not depend on
    H or W. With an even g_w the patches are nested on the pixel grid, so the widest one is read once and
    the others are its central crops, pooled as a pyramid; otherwise each scale is read on its own.
    """
    if images.dim() != 4 or locations.shape != (images.shape[0], 2):
        raise ValueError(
            f"expected images (B, C, H, W) and locations (B, 2), got {tuple(images.shape)} "
            f"and {tuple(locations.shape)}"
        )
    height, width = images.shape[2:]
    centre_x = (locations[:, 0].detach() + 1) * (width / 2)
    centre_y = (locations[:, 1].detach() + 1) * (height / 2)
    widest = patch_size * 2 ** (num_scales - 1)
    scales = []
    if patch_size % 2 == 0 or num_scales == 1:
        # Patch s starts (widest - g_w 2**s) / 2 pixels inside the widest one: a multiple of 2**s when g_w is
        # even, so the widest patch is read once, pooled by 2 per scale, and each scale is a centre crop.
        level = _read_square(images, _patch_start(centre_y, widest), _patch_start(centre_x, widest), widest)
        for scale in range(num_scales):
            if scale > 0:
                level = _area_pool(level, 2)
            margin = (level.shape[-1] - patch_size) // 2
            scales.append(level[:, :, margin : margin + patch_size, margin : margin + patch_size])
    else:
        for scale in range(num_scales):
            side = patch_size * 2**scale
            square = _read_square(images, _patch_start(centre_y, side), _patch_start(centre_x, side), side)
            scales.append(_area_pool(square, 2**scale))
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
        self._sensor = glimpse

    def use_compiled_sensor(self) -> None:
        """Use a torch.compile'd sensor (optional, ``train.compile``): it fuses the index arithmetic,
        masking and pooling into a few loops. Same values up to float rounding; first calls are slow."""
        self._sensor = torch.compile(glimpse, dynamic=None)

    def forward(self, images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        patches = self._sensor(images, where, patch_size=self.patch_size, num_scales=self.num_scales)
        return patches.flatten(1)
