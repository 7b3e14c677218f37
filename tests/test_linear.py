import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attention.linear import SWITCH, Linear, linear, onednn_enabled


def _grads(function, x, weight, bias, grad_out):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    out = function(x, weight, bias)
    out.backward(grad_out)
    return out, x.grad, weight.grad, None if bias is None else bias.grad


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_linear_equals_pytorch_in_values_and_gradients(with_bias, transposed_input):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 64, generator=generator)
    if transposed_input:  # a non-contiguous input, as the backward pass makes
        x = torch.randn(64, 37, generator=generator).t()
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator) if with_bias else None
    grad_out = torch.randn(37, 48, generator=generator)
    ours = _grads(linear, x, weight, bias, grad_out)
    reference = _grads(F.linear, x, weight, bias, grad_out)
    for got, expected in zip(ours, reference, strict=True):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_broadcast_gradient_is_accepted():
    # the gradient of a sum arrives expanded (stride 0)
    x = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(4, 3, requires_grad=True)
    linear(x, weight).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(dim=0).expand(5, 3))
    torch.testing.assert_close(weight.grad, x.detach().sum(dim=0).expand(4, 3))


def test_frozen_weight_gets_no_gradient_and_input_does():
    x = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(4, 3)
    linear(x, weight).sum().backward()
    assert weight.grad is None and x.grad is not None


def test_other_dtypes_and_shapes_fall_back_to_pytorch():
    x64 = torch.randn(6, 3, dtype=torch.float64)
    w64 = torch.randn(2, 3, dtype=torch.float64)
    assert linear(x64, w64).dtype == torch.float64
    torch.testing.assert_close(linear(x64, w64), F.linear(x64, w64))
    x3 = torch.randn(2, 6, 3)
    w = torch.randn(4, 3)
    torch.testing.assert_close(linear(x3, w), F.linear(x3, w))


def test_linear_module_shares_nn_linear_state_dict():
    torch.manual_seed(0)
    plain = nn.Linear(8, 5)
    ours = Linear(8, 5)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), plain(x))
    assert isinstance(ours, nn.Linear)


def test_onednn_is_used_where_pytorch_has_it_unless_switched_off():
    # On the project's CPU builds the operator exists; the fallback is for other builds and devices.
    expected = hasattr(torch.ops.mkldnn, "_linear_pointwise") and os.environ.get(SWITCH) != "0"
    assert onednn_enabled() == expected


def test_layers_take_the_onednn_path_where_enabled():
    layer = Linear(3, 2)
    out = layer(torch.randn(4, 3))
    assert ("OneDNN" in type(out.grad_fn).__name__) == onednn_enabled()


def test_empty_batch_gives_an_empty_product():
    out = linear(torch.zeros(0, 3), torch.randn(2, 3), torch.randn(2))
    assert out.shape == (0, 2)


@pytest.mark.skipif(not onednn_enabled(), reason="second derivatives are refused only on the oneDNN path")
def test_second_derivative_is_refused_not_silently_zero():
    x = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(2, 3, requires_grad=True)
    (grad_x,) = torch.autograd.grad(linear(x, weight).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad_x.sum(), weight)
