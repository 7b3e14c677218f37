import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attention import linear as kernels
from attention.linear import ONEDNN, PYTORCH, SWITCH, Linear, forced_kernel, linear, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no usable oneDNN operator")
ALL_KERNELS = [None, PYTORCH, pytest.param(ONEDNN, marks=needs_onednn)]  # None: measured


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch, tmp_path):
    """Every test starts and ends with no measured choice and the environment's switch re-read, and
    remembers choices in its own cache file, never the user's."""
    monkeypatch.setenv(kernels.CACHE_SWITCH, str(tmp_path / "linear-kernels.json"))
    kernels.reset()
    yield
    monkeypatch.undo()
    kernels.reset()


def _grads(function, x, weight, bias, grad_out):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    out = function(x, weight, bias)
    out.backward(grad_out)
    return out, x.grad, weight.grad, None if bias is None else bias.grad


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_linear_equals_pytorch_in_values_and_gradients(kernel, with_bias, transposed_input):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 64, generator=generator)
    if transposed_input:  # a non-contiguous input, as the backward pass makes
        x = torch.randn(64, 37, generator=generator).t()
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator) if with_bias else None
    grad_out = torch.randn(37, 48, generator=generator)
    with forced_kernel(kernel):
        ours = _grads(linear, x, weight, bias, grad_out)
    reference = _grads(F.linear, x, weight, bias, grad_out)
    for got, expected in zip(ours, reference, strict=True):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_broadcast_gradient_is_accepted(kernel):
    # the gradient of a sum arrives expanded (stride 0)
    x = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(4, 3, requires_grad=True)
    with forced_kernel(kernel):
        linear(x, weight).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(dim=0).expand(5, 3))
    torch.testing.assert_close(weight.grad, x.detach().sum(dim=0).expand(4, 3))


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_frozen_weight_gets_no_gradient_and_input_does(kernel):
    x = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(4, 3)
    with forced_kernel(kernel):
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


def test_empty_batch_gives_an_empty_product():
    out = linear(torch.zeros(0, 3), torch.randn(2, 3), torch.randn(2))
    assert out.shape == (0, 2)


@needs_onednn
def test_second_derivative_is_refused_on_onednn_not_silently_zero():
    x = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(2, 3, requires_grad=True)
    with forced_kernel(ONEDNN):
        (grad_x,) = torch.autograd.grad(linear(x, weight).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad_x.sum(), weight)


class FakeClock:
    """Time that passes only when a fake kernel says so: the kernel choice is tested without real timing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def install_fake_kernels(monkeypatch, seconds: dict[str, float]) -> dict[str, int]:
    """Both kernels compute PyTorch's product but take ``seconds[name]`` of fake time per call; returns
    how often each was called."""
    clock = FakeClock()
    calls = {PYTORCH: 0, ONEDNN: 0}

    def slow(name):
        def kernel(x, weight, bias):
            calls[name] += 1
            clock.now += seconds[name]
            return F.linear(x, weight, bias)

        return kernel

    monkeypatch.setattr(kernels, "_clock", clock)
    monkeypatch.setattr(kernels, "_SWITCHED", None)  # measured, whatever the environment says
    if kernels._PRODUCT is None:  # where the operator is missing, pretend it is there: only fakes run
        monkeypatch.setattr(kernels, "_PRODUCT", F.linear)
    for name in (PYTORCH, ONEDNN):
        monkeypatch.setitem(kernels._KERNELS, name, slow(name))
    return calls


def test_rule_keeps_pytorchs_kernel_when_onednn_is_slower(monkeypatch):
    install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 1.5})
    layer = Linear(8, 4)
    layer(torch.randn(16, 8)).sum().backward()
    report = kernels.kernel_report()
    assert report["kernel"] == PYTORCH and report["rule"] == "measured"
    (choice,) = report["choices"]
    assert choice["median_us"] == {PYTORCH: 1e6, ONEDNN: 1.5e6} and choice["backward"]


def test_rule_takes_onednn_when_it_is_clearly_faster(monkeypatch):
    install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 0.5})
    Linear(8, 4)(torch.randn(16, 8))
    assert kernels.kernel_report()["kernel"] == ONEDNN


def test_rule_keeps_the_default_when_the_other_is_faster_only_within_the_margin(monkeypatch):
    install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 1.0 - kernels.MARGIN / 2})
    Linear(8, 4)(torch.randn(16, 8))
    assert kernels.kernel_report()["kernel"] == PYTORCH


def test_paired_rule_is_not_fooled_by_a_slow_spell_on_both_kernels():
    # the third pair ran during a burst of load: both slow, the ratio still 0.5
    assert kernels.prefer_other([1.0, 1.0, 10.0], [0.5, 0.5, 5.0])
    assert not kernels.prefer_other([1.0, 1.0, 1.0], [0.5, 2.0, 2.0])


def test_each_shape_is_measured_once_and_each_new_shape_again(monkeypatch):
    calls = install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 0.5})
    layer = Linear(8, 4)
    layer(torch.randn(16, 8))
    measuring = dict(calls)
    assert measuring[PYTORCH] >= kernels.WARMUP_CALLS + kernels.MIN_TIMINGS
    layer(torch.randn(16, 8))
    layer(torch.randn(13, 8))  # a smaller last batch: rows round up to the same power of two
    assert calls == {PYTORCH: measuring[PYTORCH], ONEDNN: measuring[ONEDNN] + 2}
    with torch.no_grad():  # forward only: another measurement
        layer(torch.randn(16, 8))
    assert calls[PYTORCH] > measuring[PYTORCH] and len(kernels.kernel_report()["choices"]) == 2


def test_mixed_choices_are_reported_as_mixed(monkeypatch):
    seconds = {PYTORCH: 1.0, ONEDNN: 0.5}
    install_fake_kernels(monkeypatch, seconds)
    Linear(8, 4)(torch.randn(16, 8))
    seconds[ONEDNN] = 2.0
    Linear(8, 5)(torch.randn(16, 8))
    report = kernels.kernel_report()
    assert report["kernel"] == "mixed"
    assert [choice["kernel"] for choice in report["choices"]] == [ONEDNN, PYTORCH]


def test_measuring_leaves_the_callers_gradients_alone(monkeypatch):
    install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 2.0})
    x = torch.randn(6, 3, requires_grad=True)
    weight = torch.randn(4, 3, requires_grad=True)
    linear(x, weight).sum().backward()  # the first call measures both kernels, forward and backward
    torch.testing.assert_close(weight.grad, x.detach().sum(dim=0).expand(4, 3))
    torch.testing.assert_close(x.grad, weight.detach().sum(dim=0).expand(6, 3))


@pytest.mark.parametrize(
    ("value", "expected"), [("0", PYTORCH), pytest.param("1", ONEDNN, marks=needs_onednn)]
)
def test_switch_forces_a_kernel_without_measuring(monkeypatch, value, expected):
    monkeypatch.setenv(SWITCH, value)
    kernels.reset()
    monkeypatch.setattr(kernels, "measure", lambda *a, **k: pytest.fail("a forced kernel is not measured"))
    out = Linear(3, 2)(torch.randn(4, 3))
    assert ("OneDNN" in type(out.grad_fn).__name__) == (expected == ONEDNN)
    report = kernels.kernel_report()
    assert report["kernel"] == expected and report["rule"] == "forced" and SWITCH in report["reason"]


def test_missing_private_operator_falls_back_to_pytorch_and_says_why(monkeypatch):
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # a PyTorch release without the operator
    monkeypatch.setenv(SWITCH, "1")  # even when asked for
    kernels.reset()
    assert not onednn_available()
    x, weight = torch.randn(4, 3, requires_grad=True), torch.randn(2, 3)
    out = linear(x, weight)
    torch.testing.assert_close(out, F.linear(x, weight))
    assert "OneDNN" not in type(out.grad_fn).__name__
    report = kernels.kernel_report()
    assert report["kernel"] == PYTORCH and report["rule"] == "unavailable"
    assert "_linear_pointwise" in report["onednn"] and "_linear_pointwise" in report["reason"]
    with pytest.raises(ValueError, match="not available"):
        with forced_kernel(ONEDNN):
            pass


def test_kernel_report_is_json_and_names_the_cpu(monkeypatch):
    kernels.reset()
    monkeypatch.setattr(kernels, "_SWITCHED", None)  # measured, whatever the environment (conftest) says
    Linear(3, 2)(torch.randn(4, 3))  # measured on the real kernels: only the report's form is checked
    report = json.loads(json.dumps(kernels.kernel_report()))
    assert report["kernel"] in (PYTORCH, ONEDNN) and report["threads"] >= 1
    assert {"model_name", "vector_extensions", "torch_cpu_capability", "onednn_isa"} <= set(report["cpu"])
    assert report["choices"][0]["in_features"] == 3


def test_forced_kernel_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown linear kernel"):
        with forced_kernel("blas"):
            pass


def new_process() -> None:
    """What a new process starts from: no choice in memory (the cache file stays)."""
    kernels._CHOICES.clear()


def test_a_measured_choice_is_remembered_so_a_new_process_on_the_machine_takes_it(monkeypatch, tmp_path):
    seconds = {PYTORCH: 1.0, ONEDNN: 0.5}
    calls = install_fake_kernels(monkeypatch, seconds)
    layer = Linear(8, 4)
    layer(torch.randn(16, 8))
    (stored,) = json.loads((tmp_path / "linear-kernels.json").read_text()).values()  # one machine
    assert [choice["kernel"] for choice in stored.values()] == [ONEDNN]
    new_process()
    seconds[ONEDNN] = 2.0  # would now lose, measured: a close pair on a loaded machine can flip like this
    before = dict(calls)
    layer(torch.randn(16, 8))
    assert calls == {PYTORCH: before[PYTORCH], ONEDNN: before[ONEDNN] + 1}  # not measured: one call
    report = kernels.kernel_report()
    assert report["kernel"] == ONEDNN and report["choices"][0]["remembered"] is True
    assert report["cache"] == str(tmp_path / "linear-kernels.json")
    assert "remembered from an earlier process" in report["reason"]


def test_another_machines_choices_or_an_unreadable_cache_are_measured_again(monkeypatch, tmp_path):
    cache = tmp_path / "linear-kernels.json"
    calls = install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 0.5})
    monkeypatch.setattr(kernels, "_machine", lambda: "another CPU")
    Linear(8, 4)(torch.randn(16, 8))
    monkeypatch.setattr(kernels, "_machine", lambda: "this CPU")
    new_process()
    measured = dict(calls)
    Linear(8, 4)(torch.randn(16, 8))
    assert calls[PYTORCH] > measured[PYTORCH]  # measured: the other machine's choice does not count
    assert set(json.loads(cache.read_text())) == {"another CPU", "this CPU"}
    for damaged in ("{ not json", '{"this CPU": ["a list"]}'):
        cache.write_text(damaged)
        new_process()
        measured = dict(calls)
        Linear(8, 4)(torch.randn(16, 8))
        assert calls[PYTORCH] > measured[PYTORCH]
        assert [c["kernel"] for c in json.loads(cache.read_text())["this CPU"].values()] == [ONEDNN]


def test_without_a_usable_cache_each_process_measures_and_training_goes_on(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for where in ("off", str(blocker / "linear-kernels.json")):  # turned off, or a path no file can take
        monkeypatch.setenv(kernels.CACHE_SWITCH, where)
        kernels.reset()
        calls = install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 0.5})
        Linear(8, 4)(torch.randn(16, 8))
        new_process()
        measured = dict(calls)
        Linear(8, 4)(torch.randn(16, 8))
        assert calls[PYTORCH] > measured[PYTORCH]
        assert kernels.kernel_report()["kernel"] == ONEDNN and kernels.kernel_report()["cache"] is None
    assert blocker.read_text() == ""


def test_a_process_holding_the_cache_lock_too_long_does_not_stop_others(monkeypatch, tmp_path):
    import fcntl

    calls = install_fake_kernels(monkeypatch, {PYTORCH: 1.0, ONEDNN: 0.5})
    monkeypatch.setattr(kernels, "LOCK_WAIT_SECONDS", 0.2)
    with open(tmp_path / "linear-kernels.json.lock", "a") as held:  # as a process stopped mid-measurement
        fcntl.flock(held, fcntl.LOCK_EX)
        Linear(8, 4)(torch.randn(16, 8))
    assert calls[PYTORCH] > 0 and kernels.kernel_report()["kernel"] == ONEDNN  # measured, uncached
    assert kernels.kernel_report()["cache"] is None


def test_without_a_home_directory_choices_are_not_remembered(monkeypatch):
    from pathlib import Path

    def homeless():
        raise RuntimeError("Could not determine home directory")

    monkeypatch.delenv(kernels.CACHE_SWITCH)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    kernels.reset()
    assert kernels.kernel_report()["cache"] is None
