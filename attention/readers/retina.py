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


def patch_squares(
    location: tuple[float, float], *, height: int, width: int, patch_size: int, num_scales: int
) -> list[tuple[int, int, int]]:
    """(top, left, side) in image pixels of each scale's square that :func:`glimpse` reads at ``location``
    (x, y) in [-1, 1], finest first, by the sensor's own rounding rule: what a figure draws as the glimpse."""
    centre_x = torch.tensor([(float(location[0]) + 1) * width / 2])
    centre_y = torch.tensor([(float(location[1]) + 1) * height / 2])
    squares = []
    for scale in range(num_scales):
        side = patch_size * 2**scale
        squares.append((int(_patch_start(centre_y, side)[0]), int(_patch_start(centre_x, side)[0]), side))
    return squares


def _read_square(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side`` x ``side`` squares at (top, left) of each image, zero outside: (B, C, side, side).

    Each row of a square is ``side`` consecutive floats of the flattened batch, starting at its first pixel
    (columns left of the image or past its right edge run into the neighbouring row of the buffer and are
    zeroed by the column mask below; rows outside the image are read from the nearest image row and zeroed
    by the row mask). A strided view whose i-th row is ``flat[i : i + side]`` turns reading all of them into
    one ``index_select`` of whole rows, which copies each row as a block (the 96 x 96 read of 128 images of
    100 x 100 took about 0.4 ms on one thread here, against 6.5 ms with one index per pixel), and it still
    touches only the pixels it returns.
    """
    batch, channels, height, width = images.shape
    if batch == 0:
        return images.new_zeros(0, channels, side, side)
    # The strided view below counts in elements of the buffer, so the batch must be contiguous (a view for
    # the usual batch; a non-contiguous one is copied once per read)
    flat = images.contiguous().view(-1)
    offsets = torch.arange(side, device=images.device)
    # a square starting further out than this lies wholly outside either way
    rows = top.clamp(-side, height)[:, None] + offsets  # (B, side)
    cols = left.clamp(-side, width)  # (B,)
    plane_start = torch.arange(batch * channels, device=images.device).view(batch, channels, 1) * (
        height * width
    )
    # flat index of the first pixel of each row of each square: (B, C, side)
    starts = plane_start + (rows.clamp(0, height - 1) * width + cols[:, None])[:, None, :]
    if side <= height * width:
        windows = flat.as_strided((flat.numel() - side + 1, side), (1, 1))
        patch = windows.index_select(0, starts.clamp(0, flat.numel() - side).view(-1))
        patch = patch.view(batch, channels, side, side)
        # A square no wider than an image plane can only start before the buffer in the first image and end
        # after it in the last (those starts were clamped, so misplaced): read those two pixel by pixel.
        ends = [0, batch - 1] if batch > 1 else [0]
        patch[ends] = _read_pixels(flat, starts[ends], side)
    else:
        patch = _read_pixels(flat, starts, side)
    row_inside = ((rows >= 0) & (rows < height)).to(images.dtype)
    col_index = cols[:, None] + offsets
    col_inside = ((col_index >= 0) & (col_index < width)).to(images.dtype)
    return patch.mul_(row_inside[:, None, :, None]).mul_(col_inside[:, None, None, :])


def _read_pixels(flat: torch.Tensor, starts: torch.Tensor, side: int) -> torch.Tensor:
    """``flat[start + j]`` for j < side, for each start in ``starts`` (..., ), clamped into the buffer: the
    pixel-by-pixel read for rows a strided window cannot reach. Returns (..., side)."""
    index = (starts[..., None] + torch.arange(side, device=flat.device)).clamp(0, flat.numel() - 1)
    return flat[index]


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
