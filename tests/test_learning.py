"""Learning on tiny problems: the model must actually get better, not merely run."""

import torch

from attention.config import Config, with_overrides
from attention.losses import hybrid
from attention.model import build_model


def corner_task(batch: int, generator: torch.Generator):
    """Class 1 has a 4x4 block in the top-left corner of a blank 16x16 image, class 0 has nothing.

    A 4x4 retina starting at the centre sees nothing: only a policy that learns to look at the corner
    can classify, so accuracy measures whether REINFORCE trained the location network.
    """
    labels = torch.randint(2, (batch,), generator=generator)
    images = torch.zeros(batch, 1, 16, 16)
    images[labels == 1, :, :4, :4] = 1.0
    return images, labels


def small_ram(**overrides):
    base = {
        "model.reader.patch_size": 4,
        "model.num_glimpses": 2,
        "model.where.initial": "center",
        "model.where.std": 0.25,
        "model.glimpse.image_hidden": 32,
        "model.glimpse.location_hidden": 16,
        "model.glimpse.output_size": 64,
        "model.core.hidden_size": 64,
    }
    base.update(overrides)
    config = with_overrides(Config(), base).model
    torch.manual_seed(0)
    return build_model(config, image_size=(16, 16), num_classes=2)


def train(model, steps: int, lr: float = 3e-3):
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        images, labels = corner_task(64, generator)
        rollout = model.unroll(images, generator=generator)
        optimizer.zero_grad()
        hybrid(rollout, labels).total.backward()
        optimizer.step()
    images, labels = corner_task(512, torch.Generator().manual_seed(99))
    with torch.no_grad():
        rollout = model.unroll(images, sample=False)
    accuracy = (rollout.logits.argmax(1) == labels).float().mean().item()
    return accuracy, rollout.where[1].mean(0)


def test_reinforce_teaches_the_location_network_to_look_at_the_evidence():
    accuracy, mean_location = train(small_ram(), steps=400)
    assert accuracy > 0.95
    # the block's centre is pixel 2 of 16: (2 / 8 - 1) = -0.75 in location units
    assert (mean_location + 0.75).abs().max() < 0.3


def test_random_glimpses_cannot_solve_the_corner_task():
    accuracy, _ = train(small_ram(**{"model.where.policy": "random"}), steps=400)
    assert accuracy < 0.85
