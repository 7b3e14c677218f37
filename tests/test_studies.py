"""Every committed study file parses, resolves and builds; a smoke variant of each takes a training step."""

from pathlib import Path

import pytest
import torch

from attention.config import Config, flatten, load_toml, tomllib, with_overrides
from attention.losses import hybrid
from attention.train import make_model, make_optimizer, resolve_config

STUDIES = Path(__file__).resolve().parents[1] / "studies"
FILES = sorted(STUDIES.glob("*.toml"))
TABLES = [path for path in FILES if "row" in tomllib.loads(path.read_text())]
RUN_CONFIGS = [path for path in FILES if path not in TABLES]


def test_there_are_study_tables_and_run_configs():
    assert TABLES and RUN_CONFIGS


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_run_config_resolves_builds_and_takes_a_step(path, monkeypatch):
    monkeypatch.chdir(STUDIES.parent)  # init_from paths are relative to the repository
    config = resolve_config(with_overrides(Config(), load_toml(path)))
    if config.train.init_from:
        assert (Path(config.train.init_from) / "model.pt").is_file(), config.train.init_from
    # the smoke variant: the study's model and loss on a small random batch, without init_from
    config = with_overrides(config, {"train.init_from": None})
    model = make_model(config, torch.device("cpu"))
    optimizer = make_optimizer(config, model)
    size = config.data.canvas_size
    images = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0))
    rollout = model.unroll(images, generator=torch.Generator().manual_seed(1))
    loss = hybrid(rollout, torch.tensor([0, 1, 2, 3])).total
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_study_table_rows_name_run_configs_that_resolve(path, monkeypatch):
    monkeypatch.chdir(STUDIES.parent)
    study = tomllib.loads(path.read_text())
    for row in study["row"]:
        assert Path(row["config"]).is_file(), row["config"]
        config = with_overrides(Config(), load_toml(row["config"]))
        resolve_config(with_overrides(config, flatten(row.get("set", {}))))
