import torch

from attention.readers.filterbank import filter_centres, filterbank, read, window


def where_for(gx=0.0, gy=0.0, variance=1.0, delta_tilde=1.0, gamma=1.0):
    return torch.tensor(
        [
            [
                gx,
                gy,
                torch.log(torch.tensor(variance)),
                torch.log(torch.tensor(delta_tilde)),
                torch.log(torch.tensor(gamma)),
            ]
        ],
        dtype=torch.float64,
    )


def test_filter_rows_sum_to_one():
    centres = filter_centres(torch.tensor([10.0]), torch.tensor([2.0]), 5)
    bank = filterbank(centres, torch.tensor([1.5]), 20)
    torch.testing.assert_close(bank.sum(dim=2), torch.ones(1, 5))


def test_odd_grid_is_symmetric_and_middle_filter_peaks_at_centre():
    g = torch.tensor([11.0])
    centres = filter_centres(g, torch.tensor([3.0]), 5)[0]
    torch.testing.assert_close(centres - g, -(centres - g).flip(0))
    assert centres[2] == 11.0
    bank = filterbank(centres[None], torch.tensor([1.0]), 21)[0]
    assert bank[2].argmax() + 1 == 11  # pixels are 1-based


def test_centres_are_delta_apart():
    centres = filter_centres(torch.tensor([7.0]), torch.tensor([1.7]), 6)[0]
    torch.testing.assert_close(centres.diff(), torch.full((5,), 1.7))


def test_centre_of_image_is_g_tilde_zero():
    w = window(where_for(), height=9, width=13, grid_size=4)
    assert float(w["gx"][0]) == 7.0 and float(w["gy"][0]) == 5.0


def test_constant_image_reads_gamma_times_constant():
    image = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    patch = read(image, where_for(gamma=2.5, delta_tilde=0.5), grid_size=5)
    torch.testing.assert_close(patch, torch.full((1, 1, 5, 5), 0.75, dtype=torch.float64))


def test_full_grid_with_unit_stride_and_tiny_sigma_returns_the_image():
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    where = where_for(variance=1e-3).repeat(2, 1)  # delta = (8 - 1) / (8 - 1) * 1 = 1
    torch.testing.assert_close(read(image, where, grid_size=8), image)


def test_read_is_differentiable_in_the_window():
    image = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    where = where_for(gx=0.1, gy=-0.2).requires_grad_()
    read(image, where, grid_size=4).sum().backward()
    assert where.grad.abs()[0, :4].gt(0).all()


def test_filters_far_off_the_image_still_sum_to_one():
    image = torch.full((1, 1, 20, 30), 0.5, dtype=torch.float64)
    patch = read(image, where_for(gx=0.9, gy=-0.95, delta_tilde=2.0), grid_size=6)
    torch.testing.assert_close(patch, torch.full((1, 1, 6, 6), 0.5, dtype=torch.float64))


def test_untrained_soft_reader_starts_with_a_blurred_view_of_the_whole_image():
    from attention.config import Config, with_overrides
    from attention.model import build_model

    config = with_overrides(
        Config(), {"model.reader.name": "filterbank", "model.where.policy": "deterministic"}
    )
    model = build_model(config.model, image_size=(100, 100))
    w = window(model.where_head.linear.bias[None].detach(), height=100, width=100, grid_size=12)
    assert abs(float(w["gx"][0]) - 50.5) < 1e-4 and abs(float(w["delta"][0]) - 9.0) < 1e-4
    assert abs(float(w["variance"][0]) - 4.5**2) < 1e-3


def test_extreme_window_parameters_saturate_instead_of_giving_nan():
    image = torch.rand(1, 1, 30, 30)
    where = torch.tensor([[0.0, 0.0, -500.0, 300.0, 200.0]], requires_grad=True)
    patch = read(image, where, grid_size=5)
    assert torch.isfinite(patch).all()
    patch.sum().backward()
    assert torch.isfinite(where.grad).all()
