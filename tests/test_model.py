import itertools

import pytest
import torch

from attention import AttentionError
from attention.config import Config, ModelConfig, with_overrides
from attention.cores import CORES
from attention.heads import WHERE_HEADS
from attention.losses import baseline_error, cross_entropy, hybrid, reinforce, reward
from attention.model import build_model
from attention.readers import READERS

SIZE = 20


def model_config(**overrides) -> ModelConfig:
    base = {
        "model.glimpse.image_hidden": 16,
        "model.glimpse.location_hidden": 8,
        "model.glimpse.output_size": 24,
        "model.core.hidden_size": 32,
        "model.reader.patch_size": 4,
        "model.reader.num_scales": 2,
        "model.reader.grid_size": 5,
        "model.num_glimpses": 3,
    }
    base.update({f"model.{k}": v for k, v in overrides.items()})
    return with_overrides(Config(), base).model


def allowed_combinations():
    for reader, core, policy in itertools.product(READERS.names(), CORES.names(), WHERE_HEADS.names()):
        differentiable = READERS.get(reader).differentiable
        if differentiable == (policy == "deterministic"):
            yield reader, core, policy


def build(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(config, image_size=(SIZE, SIZE))


@pytest.mark.parametrize("reader,core,policy", list(allowed_combinations()))
def test_every_allowed_combination_unrolls_with_documented_shapes(reader, core, policy):
    config = model_config(**{"reader.name": reader, "core.name": core, "where.policy": policy})
    model = build(config)
    images = torch.rand(5, 1, SIZE, SIZE)
    rollout = model.unroll(images, generator=torch.Generator().manual_seed(1))
    where_dim = READERS.get(reader).where_dim
    learned = policy == "gaussian"
    assert rollout.logits.shape == (5, 10)
    assert rollout.where.shape == (3, 5, where_dim) and rollout.where_mean.shape == (3, 5, where_dim)
    assert rollout.log_probs.shape == ((2, 5) if learned else (0, 5))
    assert rollout.baselines.shape == rollout.log_probs.shape
    for tensor in (rollout.logits, rollout.where, rollout.log_probs, rollout.baselines):
        assert torch.isfinite(tensor).all()
    hybrid(rollout, torch.randint(10, (5,))).total.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())
    again = build(config).unroll(images, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rollout.logits, again.logits)
    torch.testing.assert_close(rollout.where, again.where)


@pytest.mark.parametrize("name", ["fc", "cnn"])
def test_feedforward_baselines_unroll_without_glimpses(name):
    config = model_config(name=name, cnn_kernel=5, cnn_stride=3)
    rollout = build(config).unroll(torch.rand(4, 1, SIZE, SIZE))
    assert rollout.logits.shape == (4, 10) and rollout.where.shape[0] == 0
    terms = hybrid(rollout, torch.randint(10, (4,)))
    assert terms.reinforce == 0 and terms.baseline == 0
    terms.total.backward()


def test_paper_cnn_sizes():
    config = with_overrides(Config(), {"model.name": "cnn", "model.cnn_filters": 16}).model
    net = build_model(config, image_size=(60, 60)).net
    assert net[0].out_channels == 16 and net[3].in_features == 16 * 11 * 11 and net[3].out_features == 256


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"reader.name": "filterbank", "where.policy": "gaussian"}, "deterministic"),
        ({"reader.name": "retina", "where.policy": "deterministic"}, "gaussian"),
        ({"num_glimpses": 0}, "num_glimpses"),
        ({"where.std": -0.1}, "std"),
        ({"where.bound": "wrap"}, "bound"),
        ({"where.bound": "tanh"}, "deterministic"),
        ({"reader.name": "filterbank", "where.policy": "deterministic", "where.bound": "wrap"}, "bound"),
        ({"where.initial": "corner"}, "initial"),
        ({"reader.name": "fovea"}, "unknown reader"),
        ({"core.name": "gru"}, "unknown core"),
        ({"where.policy": "greedy"}, "unknown where policy"),
        ({"name": "transformer"}, "unknown model"),
    ],
)
def test_impossible_configurations_are_refused_when_built(overrides, message):
    with pytest.raises(AttentionError, match=message):
        build(model_config(**overrides))


def grads_of(module):
    return [p.grad for p in module.parameters()]


def moved(module) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads_of(module))


def ram_and_rollout(**overrides):
    model = build(model_config(**overrides))
    rollout = model.unroll(torch.rand(6, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    return model, rollout, torch.randint(10, (6,))


def test_classification_loss_does_not_move_the_location_policy():
    model, rollout, labels = ram_and_rollout()
    cross_entropy(rollout, labels).backward()
    assert moved(model.classifier) and moved(model.core) and moved(model.glimpse_network)
    assert not moved(model.where_head)


def test_reinforce_moves_the_location_policy_and_not_the_classifier():
    model, rollout, labels = ram_and_rollout()
    returns = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    reinforce(rollout, returns).backward()
    assert moved(model.where_head)
    assert not moved(model.classifier) and not moved(model.baseline)
    # by default (routing.reinforce_reaches_core = false) the core and glimpse network are left alone
    assert not moved(model.core) and not moved(model.glimpse_network)


def test_reinforce_reaches_core_when_routed_there():
    model, rollout, _ = ram_and_rollout(**{"routing.reinforce_reaches_core": True})
    reinforce(rollout, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])).backward()
    assert moved(model.where_head) and moved(model.core) and moved(model.glimpse_network)
    assert not moved(model.classifier)


def test_baseline_error_trains_only_the_baseline_unless_routed_to_core():
    model, rollout, labels = ram_and_rollout()
    baseline_error(rollout, reward(rollout, labels)).backward()
    assert moved(model.baseline) and not moved(model.core) and not moved(model.where_head)
    model, rollout, labels = ram_and_rollout(**{"routing.baseline_reaches_core": True})
    baseline_error(rollout, reward(rollout, labels)).backward()
    assert moved(model.baseline) and moved(model.core)


def test_soft_reader_classification_loss_reaches_the_where_head():
    model, rollout, labels = ram_and_rollout(**{"reader.name": "filterbank", "where.policy": "deterministic"})
    cross_entropy(rollout, labels).backward()
    assert moved(model.where_head)


def test_tanh_bound_keeps_the_soft_window_centre_on_the_image_and_leaves_the_rest_linear():
    from attention.heads import DeterministicWhereHead

    squashed = DeterministicWhereHead(hidden_size=4, where_dim=5, bound="tanh")
    linear = DeterministicWhereHead(hidden_size=4, where_dim=5, bound="clamp")
    linear.load_state_dict(squashed.state_dict())
    h = torch.randn(64, 4) * 100  # a ReLU core's state is unbounded
    raw = linear(h, sample=False, generator=None).where
    where = squashed(h, sample=False, generator=None).where
    assert raw[:, :2].abs().max() > 1.5  # unbounded, the centre would leave the image
    torch.testing.assert_close(where[:, :2], torch.tanh(raw[:, :2]))
    torch.testing.assert_close(where[:, 2:], raw[:, 2:])
    # the initial window (bias only, centre 0) is the same either way, and the loss still reaches the head
    model, rollout, labels = ram_and_rollout(
        **{"reader.name": "filterbank", "where.policy": "deterministic", "where.bound": "tanh"}
    )
    assert rollout.where[:, :, :2].abs().max() <= 1.0
    cross_entropy(rollout, labels).backward()
    assert moved(model.where_head)


def test_log_prob_is_of_the_location_actually_used():
    model, rollout, _ = ram_and_rollout(**{"where.std": 0.5})
    std = model.config.where.std
    used = rollout.where[1:]  # locations chosen by the policy (the first is the random start)
    assert used.abs().max() <= 1.0  # bound = clamp
    expected = torch.distributions.Normal(rollout.where_mean[1:], std).log_prob(used).sum(-1)
    torch.testing.assert_close(rollout.log_probs, expected)


def test_unroll_log_prob_at_the_border_is_the_tail_mass():
    # a wide policy puts many chosen locations on the border, where the rollout's log-probability must be
    # the censored Gaussian's tail mass, not the density
    model, rollout, _ = ram_and_rollout(**{"where.std": 3.0})
    used, mean = rollout.where[1:], rollout.where_mean[1:]
    assert (used.abs() == 1.0).any()
    inside = torch.distributions.Normal(mean, 3.0).log_prob(used)
    upper = torch.special.log_ndtr((mean - 1.0) / 3.0)
    lower = torch.special.log_ndtr((-1.0 - mean) / 3.0)
    expected = torch.where(used == 1.0, upper, torch.where(used == -1.0, lower, inside)).sum(-1)
    torch.testing.assert_close(rollout.log_probs, expected)


def test_mean_unroll_follows_policy_means():
    model = build(model_config(**{"where.initial": "center"}))
    rollout = model.unroll(torch.rand(4, 1, SIZE, SIZE), sample=False)
    torch.testing.assert_close(rollout.where, rollout.where_mean)
    assert rollout.where[0].abs().sum() == 0


def test_reinforce_step_raises_log_prob_of_a_rewarded_location():
    model = build(model_config(**{"where.std": 0.3, "num_glimpses": 2, "where.initial": "center"}))
    images = torch.rand(6, 1, SIZE, SIZE)
    rollout = model.unroll(images, generator=torch.Generator().manual_seed(4))
    returns = torch.zeros(6)
    returns[0] = 1.0  # only example 0 was rewarded

    def log_prob_of_chosen():
        h, _ = model.step(images, rollout.where[0], model.core.initial_state(6, images.device))
        mean = model.where_head(h, sample=False, generator=None).mean
        return torch.distributions.Normal(mean, 0.3).log_prob(rollout.where[1]).sum(-1)

    before = log_prob_of_chosen().detach()
    optimizer = torch.optim.SGD(model.where_head.parameters(), lr=0.05)
    reinforce(rollout, returns).backward()
    optimizer.step()
    after = log_prob_of_chosen().detach()
    assert after[0] > before[0]


def test_clamped_locations_use_the_censored_log_probability():
    from attention.heads import GaussianWhereHead

    head = GaussianWhereHead(hidden_size=4, where_dim=2, std=0.5, bound="clamp")
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(2.0)  # tanh(2) = 0.96: most samples land beyond +1 and are clamped
    sample = head(torch.zeros(4000, 4), sample=True, generator=torch.Generator().manual_seed(0))
    mean = torch.tanh(torch.tensor(2.0))
    at_bound = sample.where == 1.0
    assert at_bound.any() and (~at_bound).any()
    upper_tail = torch.special.log_ndtr((mean - 1.0) / 0.5)
    lower_tail = torch.special.log_ndtr((-1.0 - mean) / 0.5)
    inside = torch.distributions.Normal(mean, 0.5).log_prob(sample.where)
    expected = torch.where(at_bound, upper_tail, torch.where(sample.where == -1.0, lower_tail, inside)).sum(
        -1
    )
    torch.testing.assert_close(sample.log_prob, expected)
    # the score of a censored Gaussian has mean zero: REINFORCE stays unbiased near the border (the
    # density at the clamped point instead gives about -0.17 here)
    score_head = GaussianWhereHead(hidden_size=4, where_dim=2, std=0.5, bound="clamp")
    with torch.no_grad():
        score_head.linear.weight.zero_()
        score_head.linear.bias.fill_(0.8)
    drawn = score_head(torch.zeros(20000, 4), sample=True, generator=torch.Generator().manual_seed(1))
    drawn.log_prob.mean().backward()
    assert score_head.linear.bias.grad.abs().max() < 0.02


def test_lstm_core_step_equals_torch_lstm_cell():
    torch.manual_seed(0)
    core = CORES.build("lstm", input_size=6, hidden_size=5)
    g = torch.randn(4, 6, requires_grad=True)
    state = (torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True))
    h, (h_again, c) = core.step(g, state)
    expected_h, expected_c = core.cell(g, state)
    torch.testing.assert_close(h, expected_h)
    torch.testing.assert_close(c, expected_c)
    assert h is h_again
    inputs = (g, *state, *core.parameters())
    ours = torch.autograd.grad((2 * h + c).sum(), inputs)
    reference = torch.autograd.grad((2 * expected_h + expected_c).sum(), inputs)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected)
