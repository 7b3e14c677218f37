"""``Linear``: ``nn.Linear`` whose float32 products on the CPU run on oneDNN's kernels, forward and backward.

Why: PyTorch sends a float32 CPU matmul to MKL, which on the project's AMD EPYC machines runs at about
100 GFLOP/s a core for the (128 x 256) @ (256 x 256) products of RAM's layers (no faster than an AVX2 code
path would), where oneDNN's kernels (also shipped inside PyTorch, used by its compiler for linear layers)
reach about 200 (docs/performance.md). The layers' products are most of a RAM training step. The results
equal PyTorch's up to float rounding (another order of summation); tests/test_linear.py checks values and
gradients against ``torch.nn.functional.linear``.

Everything else (other devices and dtypes, inputs that are not 2-D or are empty, a PyTorch without the
operator, or ``ATTENTION_ONEDNN_LINEAR=0`` in the environment) goes through ``torch.nn.functional.linear``
unchanged. The parameters are those of ``nn.Linear``, so state dicts load either way. Not supported on the
oneDNN path: second derivatives (refused), forward-mode AD, and CPU autocast (it stays float32).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Set ATTENTION_ONEDNN_LINEAR=0 to keep PyTorch's default kernels (for example to compare the two).
SWITCH = "ATTENTION_ONEDNN_LINEAR"


def _onednn_product():
    """oneDNN's x @ w.T (+ b), or None where this PyTorch does not have it or it gives a wrong answer."""
    if os.environ.get(SWITCH, "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        probe = op(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4), "none", [], "")
    except (AttributeError, RuntimeError):
        return None
    if not torch.equal(probe, torch.full((2, 4), 4.0)):
        return None
    return lambda x, weight, bias=None: op(x, weight, bias, "none", [], "")


_PRODUCT = _onednn_product()


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with all three products (y, dL/dx = g W, dL/dW = g^T x) on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _PRODUCT(x, weight, bias)

    @staticmethod
    @once_differentiable  # oneDNN's product has no autograd of its own: refuse a second derivative
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # a broadcast gradient (stride 0) is not a layout oneDNN takes
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _PRODUCT(grad, weight.t())  # (B, out) @ (out, in)
        if ctx.needs_input_grad[1]:
            grad_weight = _PRODUCT(grad.t(), x.t())  # (out, B) @ (B, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=0)
        return grad_x, grad_weight, grad_bias


# torch.compiler.is_compiling is PyTorch 2.3+; older versions have only the dynamo one
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``, on oneDNN for 2-D float32 CPU tensors when available."""
    if (
        _PRODUCT is not None
        and x.dim() == 2
        and x.numel() > 0
        and weight.numel() > 0  # oneDNN refuses empty products
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        # torch.compile cannot trace the private operator; its own compiler picks the kernels there
        and not _is_compiling()
    ):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def onednn_enabled() -> bool:
    """Whether float32 CPU products go to oneDNN in this process (recorded by ``attention bench``)."""
    return _PRODUCT is not None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
