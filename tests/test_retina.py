import pytest
import torch

from attention import AttentionError
from attention.readers.retina import RetinaReader, glimpse


def reference_glimpse(images, locations, patch_size, num_scales):
    """Slow per-example, per-pixel reference: the definition written out as loops."""
    batch, channels, height, width = images.shape
    out = torch.zeros(batch, num_scales, channels, patch_size, patch_size, dtype=torch.float64)
    for b in range(batch):
        cx = (float(locations[b, 0]) + 1) * width / 2
        cy = (float(locations[b, 1]) + 1) * height / 2
        for s in range(num_scales):
            factor = 2**s
            side = patch_size * factor
            top = int(torch.floor(torch.tensor(cy - side / 2 + 0.5)))
            left = int(torch.floor(torch.tensor(cx - side / 2 + 0.5)))
            for c in range(channels):
                for i in range(patch_size):
                    for j in range(patch_size):
                        total = 0.0
                        for di in range(factor):
                            for dj in range(factor):
                                r, q = top + i * factor + di, left + j * factor + dj
                                if 0 <= r < height and 0 <= q < width:
                                    total += float(images[b, c, r, q])
                        out[b, s, c, i, j] = total / factor**2
    return out


@pytest.mark.parametrize("patch_size,num_scales,size", [(8, 1, 28), (4, 3, 20), (5, 2, 17), (3, 3, 11)])
def test_vectorized_retina_equals_reference_loop(patch_size, num_scales, size):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, size, size + 3, generator=generator, dtype=torch.float64)
    # include the centre, the corners and points outside the image
    locations = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [1.1, -0.3]], dtype=torch.float64)
    fast = glimpse(images, locations, patch_size=patch_size, num_scales=num_scales)
    slow = reference_glimpse(images, locations, patch_size, num_scales)
    assert fast.shape == (3, num_scales, 2, patch_size, patch_size)
    torch.testing.assert_close(fast, slow)


@pytest.mark.parametrize("patch_size,num_scales,size", [(12, 3, 30), (4, 2, 9), (3, 2, 2), (2, 2, 1)])
@pytest.mark.parametrize("channels", [1, 2])
def test_squares_over_the_batch_buffer_edges_equal_reference_loop(patch_size, num_scales, size, channels):
    # The first two images look at their top-left corner and the last two at their bottom-right one, so rows
    # of the widest square start before the flattened batch and end after it; the middle ones hang over each
    # side. The 2x2 and 1x1 images are smaller than the widest square, whose rows then span several images.
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(7, channels, size, size, generator=generator, dtype=torch.float64)
    locations = torch.tensor(
        [[-1.0, -1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.3, 0.95], [1.0, 1.0], [1.0, 1.0]],
        dtype=torch.float64,
    )
    fast = glimpse(images, locations, patch_size=patch_size, num_scales=num_scales)
    torch.testing.assert_close(fast, reference_glimpse(images, locations, patch_size, num_scales))


def test_non_contiguous_batches_read_the_same_as_contiguous_ones():
    # the first channel of an HWC batch, and every other column: flattening them gives a strided view
    generator = torch.Generator().manual_seed(2)
    channels_last = torch.rand(4, 28, 28, 3, generator=generator).permute(0, 3, 1, 2)[:, :1]
    every_other = torch.rand(4, 1, 28, 56, generator=generator)[..., ::2]
    locations = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [0.5, -0.2], [1.0, 1.0]])
    for images in (channels_last, every_other):
        fast = glimpse(images, locations, patch_size=8, num_scales=2)
        torch.testing.assert_close(fast, glimpse(images.contiguous(), locations, patch_size=8, num_scales=2))


def test_empty_batch_reads_nothing():
    patches = glimpse(torch.zeros(0, 1, 28, 28), torch.zeros(0, 2), patch_size=8, num_scales=2)
    assert patches.shape == (0, 2, 1, 8, 8)


def test_one_pixel_image_peaks_at_patch_centre():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 14, 14] = 1.0
    # (0, 0) is the image centre: an even 8x8 patch spans pixels 10..17, so pixel 14 sits at (4, 4)
    patch = glimpse(image, torch.zeros(1, 2), patch_size=8, num_scales=1)[0, 0, 0]
    assert patch[4, 4] == 1.0 and patch.sum() == 1.0


def test_x_moves_across_columns_and_y_across_rows():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 14, 14] = 1.0
    step = 2 / 28  # one pixel in location units
    right = glimpse(image, torch.tensor([[2 * step, 0.0]]), patch_size=8, num_scales=1)[0, 0, 0]
    down = glimpse(image, torch.tensor([[0.0, 2 * step]]), patch_size=8, num_scales=1)[0, 0, 0]
    # looking 2 px to the right moves the pixel 2 columns left in the patch; likewise rows for y
    assert right[4, 2] == 1.0
    assert down[2, 4] == 1.0


def test_top_left_corner_is_minus_one_minus_one_and_outside_reads_zero():
    image = torch.ones(1, 1, 10, 10)
    patch = glimpse(image, torch.tensor([[-1.0, -1.0]]), patch_size=4, num_scales=1)[0, 0, 0]
    # centred on the corner: the top-left quarter is outside the image
    assert patch[:2, :2].sum() == 0
    assert patch[2:, 2:].sum() == 4
    assert patch.sum() == 4


def test_coarser_scales_average_blocks():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = glimpse(image, torch.zeros(1, 2), patch_size=2, num_scales=2)[0, :, 0]
    torch.testing.assert_close(patches[0], torch.tensor([[5.0, 6.0], [9.0, 10.0]]))
    # scale 2 covers the whole 4x4 image, each output the mean of a 2x2 block
    torch.testing.assert_close(patches[1], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_retina_wider_than_sensible_is_refused():
    with pytest.raises(AttentionError, match="widest patch"):
        RetinaReader(image_size=(28, 28), channels=1, patch_size=8, num_scales=6)


@pytest.mark.slow
def test_compiled_sensor_equals_the_eager_one():
    reader = RetinaReader(image_size=(40, 40), channels=1, patch_size=6, num_scales=3)
    images = torch.rand(8, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    where = torch.rand(8, 2, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    eager = reader(images, where)
    reader.use_compiled_sensor()
    torch.testing.assert_close(reader(images, where), eager)


def test_far_off_locations_read_zeros_and_never_wrap_around():
    # a location billions of pixels away must not overflow the index arithmetic into a valid pixel
    images = torch.ones(2, 1, 12, 12, dtype=torch.float64)
    # x = 2**32 / 6 puts the centre at column 2**32 + 6, which is column 6 modulo 2**32
    locations = torch.tensor([[2.0**32 / 6, 0.0], [0.0, -5e9]], dtype=torch.float64)
    assert glimpse(images, locations, patch_size=4, num_scales=2).abs().sum() == 0
    # and just inside the border the reference loop still agrees
    images = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    near = torch.tensor([[0.95, -0.95], [-1.3, 1.2]], dtype=torch.float64)
    torch.testing.assert_close(
        glimpse(images, near, patch_size=4, num_scales=2), reference_glimpse(images, near, 4, 2)
    )


def test_patch_squares_name_the_pixels_the_sensor_reads():
    from attention.readers.retina import patch_squares

    image = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    for location in [(0.1, -0.3), (-0.55, 0.8), (0.0, 0.0)]:
        read = glimpse(image, torch.tensor([location]), patch_size=6, num_scales=2)
        squares = patch_squares(location, height=24, width=24, patch_size=6, num_scales=2)
        (top, left, side), (top2, left2, side2) = squares
        assert side == 6 and side2 == 12
        padded = torch.nn.functional.pad(image, (12, 12, 12, 12))  # the sensor reads zeros outside
        assert torch.equal(read[0, 0, 0], padded[0, 0, top + 12 : top + 18, left + 12 : left + 18])
        assert (top2, left2) == (top - 3, left - 3)  # the next scale is centred on the same point
