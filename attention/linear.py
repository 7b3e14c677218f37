"""``Linear``: ``nn.Linear`` whose float32 CPU products run on the faster of two kernels on this machine.

Why: PyTorch sends a float32 CPU product to MKL. oneDNN's kernels (shipped inside PyTorch, reached through
the private operator ``torch.ops.mkldnn._linear_pointwise``) ran the (128 x 256) @ (256 x 256) products of
RAM's layers about twice as fast on an AVX-512 AMD EPYC host, but about 1.3x slower on an AVX2-only host of
the same machine type (docs/performance.md). So neither is always right, and the choice is measured here:

* The first time a product of a new shape runs in a process (rows rounded up to a power of two, input and
  output features, bias, whether gradients are needed, thread count), both kernels run it a few times,
  interleaved, on that call's own tensors: forward and, where gradients are needed, backward as training
  runs them (about 10 ms per kernel, at least 3 timings each). oneDNN is kept for that shape only when its
  median time is at least ``MARGIN`` below PyTorch's, paired call by call (:func:`prefer_other`); otherwise
  PyTorch's kernel, the default, is kept. The choice is not measured again in that process.
* The choice is remembered on this machine: the first process to measure a shape writes it to a small
  JSON file (``ATTENTION_KERNEL_CACHE``, default ``$XDG_CACHE_HOME/attention/linear-kernels.json``), keyed
  by the CPU, its vector extensions, oneDNN's ISA and the PyTorch version; later processes read it instead
  of measuring. The two kernels round differently, so without this a run resumed in a new process, an
  engine's retry or a rerun of the same seed could take the other kernel for a shape whose two timings
  are close, and end with other weights. Measuring is done under a lock on the file, so two workers
  starting together neither measure at once (a loaded machine) nor disagree. Delete the file to measure
  again; ``ATTENTION_KERNEL_CACHE=off`` measures in every process, as before.
* ``ATTENTION_ONEDNN_LINEAR=0`` forces PyTorch's kernel and ``=1`` oneDNN's (read at import, or by
  :func:`reset`). A forced choice is the way to make two processes round identically: the two kernels
  sum in different orders, and two processes may measure differently when the two are close.
* Where the private operator is missing or wrong (another PyTorch release or build), PyTorch's kernel is
  used and :func:`kernel_report` says why.

:func:`kernel_report` records the choice with the CPU (attention/cpu.py) for ``result.json`` and
``attention bench``. The results equal PyTorch's up to float rounding; tests/test_linear.py checks values
and gradients against ``torch.nn.functional.linear``. Other devices and dtypes, inputs that are not 2-D or
are empty, and code being compiled by ``torch.compile`` go through ``torch.nn.functional.linear``. The
parameters are those of ``nn.Linear``, so state dicts load either way. Not supported on the oneDNN path:
second derivatives (refused), forward-mode AD, and CPU autocast (it stays float32).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from attention import AttentionError

log = logging.getLogger(__name__)

# ATTENTION_ONEDNN_LINEAR=0 forces PyTorch's kernel, =1 oneDNN's; unset, the faster is measured.
SWITCH = "ATTENTION_ONEDNN_LINEAR"
# where measured choices are remembered on this machine; "off": measured anew in every process
CACHE_SWITCH = "ATTENTION_KERNEL_CACHE"
PYTORCH, ONEDNN = "pytorch", "onednn"

# oneDNN is kept for a shape only when its paired median time is at least this fraction below PyTorch's,
# so that noise between two nearly equal kernels leaves the default in place.
MARGIN = 0.05
# Per shape: warm-up calls of each kernel (oneDNN builds its kernel on the first call of a shape), then
# interleaved timings until each kernel has had MEASURE_SECONDS, with at least MIN_TIMINGS and at most
# MAX_TIMINGS each.
WARMUP_CALLS = 2
MEASURE_SECONDS = 0.01
MIN_TIMINGS, MAX_TIMINGS = 3, 25
# How long a process waits for another to finish measuring before it measures on its own, uncached.
LOCK_WAIT_SECONDS = 10.0


def _find_onednn() -> tuple[Callable | None, str]:
    """(oneDNN's x @ w.T (+ b), "available") or (None, why it cannot be used in this PyTorch)."""
    if not torch.backends.mkldnn.is_available():
        return None, f"torch {torch.__version__} is built without oneDNN"
    try:
        operator = torch.ops.mkldnn._linear_pointwise
        probe = operator(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4), "none", [], "")
    except (AttributeError, RuntimeError) as error:
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        return (
            None,
            f"torch.ops.mkldnn._linear_pointwise is missing or fails in torch {torch.__version__}: {why}",
        )
    if not torch.equal(probe, torch.full((2, 4), 4.0)):
        return None, f"torch.ops.mkldnn._linear_pointwise gives a wrong product in torch {torch.__version__}"
    return (lambda x, weight, bias=None: operator(x, weight, bias, "none", [], "")), "available"


def _read_switch() -> str | None:
    value = os.environ.get(SWITCH)
    if value in (None, ""):
        return None
    if value not in ("0", "1"):
        log.warning("%s=%r is neither 0 nor 1: the linear kernel is measured", SWITCH, value)
        return None
    return PYTORCH if value == "0" else ONEDNN


def _cache_path() -> Path | None:
    value = os.environ.get(CACHE_SWITCH)
    if value == "off":
        return None
    if value:
        return Path(value)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home directory (a container's arbitrary user): measured in each process
        return None
    return Path(base) / "attention" / "linear-kernels.json"


def _shown(path: Path | None) -> str | None:
    """``path`` as recorded in result.json: the home directory as ``~``, so records name no user."""
    if path is None:
        return None
    with contextlib.suppress(RuntimeError, ValueError):
        return "~/" + str(path.relative_to(Path.home()))
    return str(path)


_PRODUCT, _ONEDNN_STATUS = _find_onednn()
_SWITCHED = _read_switch()
_CACHE = _cache_path()
_FORCED: str | None = None  # set by forced_kernel()
_CHOICES: dict[tuple, dict[str, Any]] = {}


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


def _pytorch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _OneDNNLinear.apply(x, weight, bias)


# The kernels a product can run on, PyTorch's (the default) first; tests replace them with fakes.
_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    PYTORCH: _pytorch_linear,
    ONEDNN: _onednn_linear,
}
_clock = time.perf_counter  # replaced by a fake clock in tests: no test depends on real timing


def prefer_other(default_seconds: list[float], other_seconds: list[float], *, margin: float = MARGIN) -> bool:
    """Whether the other kernel is faster than the default: the median over paired timings (taken one
    after the other, so a slow spell of the machine falls on both) of other / default is below 1 - margin."""
    ratios = [other / default for default, other in zip(default_seconds, other_seconds, strict=True)]
    return statistics.median(ratios) < 1 - margin


def measure(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, needs_grad: bool
) -> dict[str, list[float]]:
    """Seconds per call of each kernel on these tensors (forward, plus backward when ``needs_grad``),
    interleaved and alternating which goes first. The tensors are detached views: the caller's
    autograd graph and gradients are untouched, and no random numbers are drawn."""
    leaves = [t.detach() if t is not None else None for t in (x, weight, bias)]
    originals = (x, weight, bias)
    wrt = []
    if needs_grad:
        for leaf, original in zip(leaves, originals, strict=True):
            if leaf is not None and original.requires_grad:
                wrt.append(leaf.requires_grad_())

    def call(kernel: Callable) -> None:
        with torch.enable_grad() if wrt else torch.no_grad():
            out = kernel(*leaves)
            if wrt:
                torch.autograd.grad(out, wrt, out.detach())  # any gradient of the output's shape will do

    names = list(_KERNELS)
    for name in names:
        for _ in range(WARMUP_CALLS):
            call(_KERNELS[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    spent = 0.0
    for timing in range(MAX_TIMINGS):
        for name in names if timing % 2 == 0 else reversed(names):
            start = _clock()
            call(_KERNELS[name])
            seconds[name].append(_clock() - start)
            spent += seconds[name][-1]
        if timing + 1 >= MIN_TIMINGS and spent >= MEASURE_SECONDS * len(names):
            break
    return seconds


def _shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs_grad: bool) -> dict:
    """What a choice is made for (rows rounded up to a power of two, as :func:`_kernel_for` keys them)."""
    return {
        "rows": 1 << (x.shape[0] - 1).bit_length(),
        "in_features": x.shape[1],
        "out_features": weight.shape[0],
        "bias": bias is not None,
        "backward": needs_grad,
        "threads": torch.get_num_threads(),
    }


def _choose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs_grad: bool) -> dict:
    shape = _shape(x, weight, bias, needs_grad)
    try:
        seconds = measure(x, weight, bias, needs_grad=needs_grad)
    except RuntimeError as error:  # for example inference tensors that autograd may not save
        log.warning("could not time the linear kernels on %s (%s): PyTorch's kernel", shape, error)
        return {**shape, "kernel": PYTORCH, "measurement_failed": str(error).splitlines()[0]}
    kernel = ONEDNN if prefer_other(seconds[PYTORCH], seconds[ONEDNN]) else PYTORCH
    microseconds = {name: round(1e6 * statistics.median(times), 1) for name, times in seconds.items()}
    log.debug("linear %s: median µs %s: %s", shape, microseconds, kernel)
    return {**shape, "kernel": kernel, "median_us": microseconds, "timings": len(seconds[PYTORCH])}


@functools.cache  # read once per process (it parses /proc/cpuinfo), not at every new shape
def _machine() -> str:
    """What a remembered choice is valid for: the CPU, its vector extensions, oneDNN's ISA, PyTorch."""
    from attention.cpu import cpu_description

    cpu = cpu_description()
    extensions = ",".join(cpu["vector_extensions"] or [])
    return f"{cpu['model_name']} | {extensions} | oneDNN {cpu['onednn_isa']} | torch {torch.__version__}"


@contextlib.contextmanager
def _locked_cache(path: Path) -> Iterator[dict]:
    """The remembered choices of every machine, read under an exclusive lock and written back (whole, by
    renaming) when the block changed them. An unreadable file counts as empty and is replaced."""
    from attention.runs import atomic_write_bytes, lock_within

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        # a deadline, not a wait without end: a process stopped while it measures (Ctrl-Z, a debugger)
        # must not hold every other run on the machine at its first product
        if not lock_within(lock, LOCK_WAIT_SECONDS):
            raise OSError(f"its lock was held for more than {LOCK_WAIT_SECONDS:.0f} s")
        try:
            stored = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            log.warning("ignoring the linear kernel cache %s (%s): measuring again", path, error)
            stored = {}
        before = json.dumps(stored, sort_keys=True)
        yield stored
        if json.dumps(stored, sort_keys=True) != before:
            atomic_write_bytes(path, (json.dumps(stored, indent=1, sort_keys=True) + "\n").encode())


def _remembered_or_measured(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs_grad: bool
) -> dict:
    """The choice remembered on this machine for this shape, else a measured one, remembered for later
    processes (:data:`CACHE_SWITCH`). Without a usable cache file, measured in this process only."""
    global _CACHE
    if _CACHE is None:
        return _choose(x, weight, bias, needs_grad)
    choice = None
    try:
        with _locked_cache(_CACHE) as stored:
            machine = _machine()
            choices = stored.setdefault(machine, {})
            if not isinstance(choices, dict):  # a hand-edited or foreign file: this machine's part anew
                choices = stored[machine] = {}
            shape = _shape(x, weight, bias, needs_grad)
            key = json.dumps(shape, sort_keys=True)
            known = choices.get(key)
            if isinstance(known, dict) and known.get("kernel") in (PYTORCH, ONEDNN):
                return {**shape, **known, "remembered": True}
            choice = _choose(x, weight, bias, needs_grad)
            if "measurement_failed" not in choice:
                choices[key] = {k: choice[k] for k in ("kernel", "median_us", "timings")}
            return choice
    except (OSError, AttentionError) as error:
        log.warning("linear kernel cache %s unusable (%s): measured in this process only", _CACHE, error)
        _CACHE = None
        return choice or _choose(x, weight, bias, needs_grad)


def _kernel_for(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    forced = _FORCED or _SWITCHED
    if forced is not None:
        return forced
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    rows = x.shape[0]
    # rows rounded up to a power of two: a last, smaller batch does not measure again
    key = (1 << (rows - 1).bit_length(), x.shape[1], weight.shape[0], bias is not None, needs_grad)
    key += (torch.get_num_threads(),)
    choice = _CHOICES.get(key)
    if choice is None:
        choice = _CHOICES[key] = _remembered_or_measured(x, weight, bias, needs_grad)
    return choice["kernel"]


# torch.compiler.is_compiling is PyTorch 2.3+; older versions have only the dynamo one
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``; for 2-D float32 CPU tensors on the kernel chosen for their shape."""
    # the cheapest checks first: this runs for every layer at every step
    if (
        _PRODUCT is not None
        and x.is_cpu
        and x.ndim == 2
        and x.dtype is weight.dtype is torch.float32
        and (bias is None or bias.dtype is torch.float32)
        and x.shape[0] > 0
        and weight.numel() > 0  # oneDNN refuses empty products
        # torch.compile cannot trace the private operator; its own compiler picks the kernels there
        and not _is_compiling()
    ):
        return _KERNELS[_kernel_for(x, weight, bias)](x, weight, bias)
    return F.linear(x, weight, bias)


def onednn_available() -> bool:
    """Whether oneDNN's private operator works in this PyTorch (whether it is used: :func:`kernel_report`)."""
    return _PRODUCT is not None


@contextlib.contextmanager
def forced_kernel(kernel: str | None) -> Iterator[None]:
    """Run every eligible product on ``kernel`` (``"pytorch"`` or ``"onednn"``) inside the block, whatever
    the measurement or the switch say (``attention bench`` times the two side by side); None changes
    nothing. Measured choices are kept for after the block."""
    global _FORCED
    if kernel not in (None, PYTORCH, ONEDNN):
        raise ValueError(f"unknown linear kernel {kernel!r}: use {PYTORCH!r} or {ONEDNN!r}")
    if kernel == ONEDNN and _PRODUCT is None:
        raise ValueError(f"oneDNN's kernel is not available: {_ONEDNN_STATUS}")
    previous, _FORCED = _FORCED, kernel
    try:
        yield
    finally:
        _FORCED = previous


def reset() -> None:
    """Forget the measured choices, look for oneDNN's operator again and re-read ``ATTENTION_ONEDNN_LINEAR``
    (for tests, or after changing the environment or the thread count in a running process)."""
    global _PRODUCT, _ONEDNN_STATUS, _SWITCHED, _CACHE
    _PRODUCT, _ONEDNN_STATUS = _find_onednn()
    _SWITCHED = _read_switch()
    _CACHE = _cache_path()
    if _SWITCHED == ONEDNN and _PRODUCT is None:
        log.warning(
            "%s=1 but oneDNN's kernel is not available (%s): PyTorch's kernel", SWITCH, _ONEDNN_STATUS
        )
    _CHOICES.clear()


def kernel_report() -> dict[str, Any]:
    """Which kernel the linear layers use in this process and why, with the CPU; JSON-serialisable.

    ``kernel``: ``"pytorch"``, ``"onednn"``, ``"mixed"`` (measured differently for different shapes; see
    ``choices``) or None (measured, but no product has run yet). ``rule``: ``"unavailable"``,
    ``"forced"`` (by the environment switch) or ``"measured"``. ``choices``: one entry per measured shape
    with its median microseconds per call for each kernel, and ``remembered`` where the choice was read
    from an earlier process's measurement on this machine. ``cache``: that file (``~`` for the home
    directory), or None where choices are not remembered."""
    from attention.cpu import cpu_description

    choices = [dict(choice) for choice in _CHOICES.values()]
    if _PRODUCT is None:
        kernel, rule = PYTORCH, "unavailable"
        reason = f"oneDNN's private operator cannot be used ({_ONEDNN_STATUS}): PyTorch's kernel"
    elif _SWITCHED is not None:
        kernel, rule = _SWITCHED, "forced"
        name = "PyTorch" if kernel == PYTORCH else "oneDNN"
        reason = f"{SWITCH}={os.environ.get(SWITCH)} forces {name}'s kernel"
    else:
        rule = "measured"
        used = sorted({choice["kernel"] for choice in choices})
        kernel = None if not used else used[0] if len(used) == 1 else "mixed"
        faster = sum(choice["kernel"] == ONEDNN for choice in choices)
        remembered = sum("remembered" in choice for choice in choices)
        reason = (
            f"timed both kernels at the first product of each shape; oneDNN was at least {MARGIN:.0%} faster "
            f"for {faster} of {len(choices)} shapes, PyTorch's kernel was kept for the others"
            + (f" ({remembered} remembered from an earlier process, {_shown(_CACHE)})" if remembered else "")
        )
    return {
        "kernel": kernel,
        "rule": rule,
        "reason": reason,
        "onednn": _ONEDNN_STATUS,
        "switch": os.environ.get(SWITCH),
        "cache": _shown(_CACHE),
        "choices": choices,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_description(),
    }


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
