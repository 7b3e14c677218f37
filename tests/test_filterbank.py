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


def uncut_filterbank(centres: torch.Tensor, variance: torch.Tensor, length: int) -> torch.Tensor:
    """DRAW's filterbank with no cut: the reference the cut is checked against."""
    a = torch.arange(1, length + 1, dtype=centres.dtype)
    logits = -((a - centres[:, :, None]) ** 2) / (2 * variance[:, None, None])
    return torch.softmax(logits, dim=2)


def gaussian_tails():
    """Centres on, near and off a 100-pixel axis, narrow and wide: filters whose tails, uncut, reach far
    below float32's smallest normal number."""
    centres = filter_centres(torch.tensor([1.0, 50.5, 100.0, -40.0]), torch.tensor([0.5, 4.0, 9.0, 2.0]), 12)
    return centres, torch.tensor([0.3, 2.0, 20.0, 6.0])


def is_denormal(t: torch.Tensor) -> torch.Tensor:
    return (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)


def test_filter_tails_are_cut_to_zero_instead_of_denormal_floats():
    centres, variance = gaussian_tails()
    bank = filterbank(centres, variance, 100)
    uncut = uncut_filterbank(centres, variance, 100)
    # uncut, these filters hold denormal float32 weights (slow on x86 CPUs); cut, none, and the cut ones are 0
    assert is_denormal(uncut).any()
    assert not is_denormal(bank).any()
    cut = bank == 0
    assert cut.any()
    torch.testing.assert_close(bank.sum(dim=2), torch.ones(4, 12))
    # only the negligible tail is cut, and the weights kept are the uncut filter's
    assert (uncut[cut] <= 1.1e-15 * uncut.amax(dim=2, keepdim=True).expand_as(uncut)[cut]).all()
    torch.testing.assert_close(bank[~cut], uncut[~cut], rtol=1e-6, atol=0)


def test_the_window_learns_through_cut_filters_as_through_uncut_ones():
    images = torch.rand(4, 1, 100, 100)
    grads = []
    for bank in (filterbank, uncut_filterbank):
        centres, variance = (t.requires_grad_() for t in gaussian_tails())
        patches = (
            bank(centres, variance, 100)[:, None]
            @ images
            @ bank(centres, variance, 100).transpose(1, 2)[:, None]
        )
        patches.square().sum().backward()
        grads.append((centres.grad, variance.grad))
    (centres_grad, variance_grad), (uncut_centres_grad, uncut_variance_grad) = grads
    assert centres_grad.ne(0).all() and variance_grad.ne(0).all()
    torch.testing.assert_close(centres_grad, uncut_centres_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(variance_grad, uncut_variance_grad, rtol=1e-5, atol=1e-6)
