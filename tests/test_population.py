"""A population of K RAMs trains each trial as it trains alone (attention/population.py, population_train.py).

Tolerances: the batched products round like the per-trial ones (checked exactly below); what differs is the
order of a few reductions (the loss means, the gradient norm) and Adam's elementwise arithmetic, a few
float32 ulps per step. After the short trainings here the largest difference seen was about 1e-7 in a weight
of order 0.1; the tests allow rtol=1e-5, atol=1e-6, well below any change a real bug makes (a wrong
generator, std or learning rate moves weights by 1e-4 or more).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from search_files import tiny_search_text

from attention import AttentionError
from attention.build import make_model, resolve_config
from attention.config import Config, with_overrides
from attention.population import PopulationRAM, _stacked_linear
from attention.population_adam import PopulationAdam
from attention.population_train import fit_population
from attention.population_trials import check_population
from attention.runs import CHECKPOINT, RESULT, WEIGHTS, read_json, read_metrics, run_is_busy, safe_load
from attention.train import fit, make_optimizer

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
TINY = {
    "data.train_limit": 48,
    "data.eval_limit": 50,
    "train.batch_size": 16,
    "train.epochs": 2,
    "model.num_glimpses": 2,
    "model.glimpse.image_hidden": 32,
    "model.glimpse.location_hidden": 16,
    "model.glimpse.output_size": 64,
    "model.core.hidden_size": 64,
}
# (seed, learning rate, location std) of the three trials
TRIALS = [(0, 1e-3, 0.1), (1, 3e-3, 0.2), (2, 1e-4, 0.05)]


def tiny(seed: int, learning_rate: float, std: float, **more: object) -> Config:
    overrides = {
        **TINY,
        "train.seed": seed,
        "train.learning_rate": learning_rate,
        "model.where.std": std,
        **more,
    }
    return resolve_config(with_overrides(Config(), overrides))


def models_and_population(configs: list[Config]) -> tuple[list[torch.nn.Module], PopulationRAM]:
    models = [make_model(config, torch.device("cpu")) for config in configs]
    return models, PopulationRAM.from_models(models)


def images_and_labels(k: int, batch: int, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(k, batch, 1, size, size, generator=generator), torch.randint(
        10, (k, batch), generator=generator
    )


def test_stacked_linear_rounds_as_each_trials_own_product():
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=generator) for s in ((3, 16, 40), (3, 24, 40), (3, 24)))
    out = _stacked_linear(x, weight, bias)
    assert out.shape == (3, 16, 24)
    for k in range(3):
        torch.testing.assert_close(out[k], F.linear(x[k], weight[k], bias[k]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "more",
    [
        {},
        {"model.core.name": "lstm"},
        {
            "model.reader.name": "filterbank",
            "model.where.policy": "deterministic",
            "model.where.bound": "tanh",
        },
        {"model.where.policy": "random", "model.where.initial": "center"},
    ],
    ids=["retina-rnn", "retina-lstm", "filterbank", "random-glimpses"],
)
def test_each_trial_of_an_unroll_is_its_model_alone_with_its_own_generator(more):
    configs = [tiny(*trial, **more) for trial in TRIALS]
    models, population = models_and_population(configs)
    images, _ = images_and_labels(3, 8)
    rollout = population.unroll(images, generators=[torch.Generator().manual_seed(s) for s, *_ in TRIALS])
    steps = configs[0].model.num_glimpses
    where_dim = models[0].reader.where_dim
    assert rollout.logits.shape == (3, 8, 10)
    assert rollout.where.shape == rollout.where_mean.shape == (3, steps, 8, where_dim)
    policy_steps = steps - 1 if models[0].learns_by_reinforce else 0
    assert rollout.log_probs.shape == rollout.baselines.shape == (3, policy_steps, 8)
    for k, model in enumerate(models):
        alone = model.unroll(images[k], sample=True, generator=torch.Generator().manual_seed(TRIALS[k][0]))
        for name in ("logits", "where", "where_mean", "log_probs", "baselines"):
            torch.testing.assert_close(getattr(rollout.trial(k), name), getattr(alone, name), **TOLERANCE)


def test_population_adam_gives_each_trial_what_torch_adam_gives_it_alone():
    configs = [tiny(*trial) for trial in TRIALS]
    models, population = models_and_population(configs)
    alone = [make_optimizer(config, model) for config, model in zip(configs, models, strict=True)]
    optimizer = PopulationAdam(population, learning_rates=[lr for _, lr, _ in TRIALS])
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=generator) for p in population.params]  # (K, *shape)
        for k, (model, torch_adam) in enumerate(zip(models, alone, strict=True)):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g[k].clone()
            torch_adam.step()
        for p, g in zip(population.params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step(population.flat_grad(), [True] * 3)
    for k, model in enumerate(models):
        for name, p in model.named_parameters():
            torch.testing.assert_close(population.trial_state(k)[name], p.detach(), **TOLERANCE)


def test_per_trial_learning_rate_and_std_really_differ():
    # two trials with the same seed and weights: only the learning rate and the std tell them apart
    configs = [tiny(0, 1e-3, 0.05), tiny(0, 1e-2, 0.3)]
    models, population = models_and_population(configs)
    images, labels = images_and_labels(2, 64)
    generators = [torch.Generator().manual_seed(7) for _ in configs]
    rollout = population.unroll(images, generators=generators)
    # the same normal draws scaled by each trial's std (away from the clamp at the border)
    noise = rollout.where[:, 1:] - rollout.where_mean[:, 1:].detach()
    inside = (rollout.where[:, 1:].abs() < 1).all(dim=0)
    assert inside.any()  # else the comparison below would pass on empty tensors
    ratio = noise[1][inside] / noise[0][inside]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.3 / 0.05), rtol=1e-3, atol=0)
    # Adam's first step moves each parameter with a gradient by its learning rate (m / sqrt(v) = sign(g))
    optimizer = PopulationAdam(population, learning_rates=[1e-3, 1e-2])
    before = population.flat.clone()
    grad = torch.ones_like(population.flat)
    optimizer.step(grad, [True, True])
    moved = (before - population.flat).abs()
    torch.testing.assert_close(moved[0], torch.full_like(moved[0], 1e-3), rtol=1e-3, atol=0)
    torch.testing.assert_close(moved[1], torch.full_like(moved[1], 1e-2), rtol=1e-3, atol=0)


def test_an_inactive_trial_is_untouched_even_by_a_nan_gradient():
    configs = [tiny(*trial) for trial in TRIALS]
    _, population = models_and_population(configs)
    optimizer = PopulationAdam(population, learning_rates=[1e-3] * 3)
    before = population.flat.clone()
    grad = torch.ones_like(population.flat)
    grad[1] = math.nan
    optimizer.step(grad, [True, False, True])
    assert torch.equal(population.flat[1], before[1])
    assert optimizer.steps == [1, 0, 1]
    assert torch.isfinite(optimizer.exp_avg).all() and torch.isfinite(population.flat).all()
    assert not torch.equal(population.flat[0], before[0])


def test_trials_that_differ_in_more_than_the_per_trial_fields_are_refused_in_one_line():
    with pytest.raises(AttentionError, match="may differ only in") as error:
        check_population([tiny(0, 1e-3, 0.1), tiny(1, 1e-3, 0.1, **{"model.num_glimpses": 3})])
    assert "\n" not in str(error.value) and "model.num_glimpses" in str(error.value)
    with pytest.raises(AttentionError, match="Adam"):
        check_population([tiny(0, 1e-3, 0.1, **{"train.optimizer": "sgd"})])
    with pytest.raises(AttentionError, match="wall-clock budget"):
        check_population([tiny(0, 1e-3, 0.1, **{"train.time_budget_s": 600})])
    game = {"data.task": "catch", "model.core.name": "lstm"}
    with pytest.raises(AttentionError, match="image classification tasks, not 'catch'"):
        check_population([tiny(0, 1e-3, 0.1, **game)])
    with pytest.raises(AttentionError, match=r"\(K=2"):
        _, population = models_and_population([tiny(0, 1e-3, 0.1), tiny(1, 1e-3, 0.1)])
        population.unroll(torch.zeros(3, 2, 1, 28, 28), generators=[None, None])


@pytest.fixture(scope="module")
def alone_runs(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The three trials trained alone by ``fit``: the reference the population must reach."""
    root = tmp_path_factory.mktemp("alone")
    for k, trial in enumerate(TRIALS):
        fit(tiny(*trial), run_dir=root / f"trial{k}", data_dir=mnist_dir, progress=False)
    return [root / f"trial{k}" for k in range(len(TRIALS))]


def test_a_population_of_three_ends_with_the_weights_of_its_trials_trained_alone(
    mnist_dir, tmp_path, alone_runs
):
    run_dirs = [tmp_path / f"trial{k}" for k in range(len(TRIALS))]
    outcomes = fit_population(
        [tiny(*trial) for trial in TRIALS], run_dirs=run_dirs, data_dir=mnist_dir, progress=False
    )
    for k, (alone, together) in enumerate(zip(alone_runs, run_dirs, strict=True)):
        assert isinstance(outcomes[k], dict), outcomes[k]
        for name in (CHECKPOINT, WEIGHTS, RESULT, "config.json", "metrics.jsonl"):
            assert (together / name).is_file()
        last_alone, last_together = safe_load(alone / CHECKPOINT), safe_load(together / CHECKPOINT)
        for key in ("model", "best_model"):
            for name, value in last_alone[key].items():
                torch.testing.assert_close(last_together[key][name], value, **TOLERANCE)
        # the Adam state is written in fit's format, so either path resumes the other's checkpoint
        for i, state in last_alone["optimizer"]["state"].items():
            moments = last_together["optimizer"]["state"][i]
            assert moments["step"] == state["step"]
            torch.testing.assert_close(moments["exp_avg_sq"], state["exp_avg_sq"], **TOLERANCE)
        assert last_together["state"]["epoch"] == last_alone["state"]["epoch"] == 2
        result_alone, result_together = read_json(alone / RESULT), read_json(together / RESULT)
        for key in ("validation_error_pct", "test_error_pct", "best_epoch", "config_hash"):
            assert result_together[key] == result_alone[key]
        assert result_together["population_size"] == 3
        rows_alone, rows_together = read_metrics(alone), read_metrics(together)  # the same metrics rows
        assert [sorted(row) for row in rows_together] == [sorted(row) for row in rows_alone]
        for row_alone, row_together in zip(rows_alone, rows_together, strict=True):
            for key in ("train_error_pct", "val_error_pct", "cross_entropy", "lr"):
                assert row_together[key] == pytest.approx(row_alone[key], rel=1e-4, abs=1e-6), key


def test_a_run_stopped_alone_continues_in_a_population_to_the_same_end(mnist_dir, tmp_path, alone_runs):
    # the other direction of the shared checkpoint: trial 1 trains its first epoch with fit, then the
    # population opens it from that checkpoint (weights, Adam's moments, both random streams, the loop's
    # state) beside two fresh trials
    run_dirs = [tmp_path / f"trial{k}" for k in range(len(TRIALS))]
    configs = [tiny(*trial) for trial in TRIALS]
    stopped = fit(configs[1], run_dir=run_dirs[1], data_dir=mnist_dir, progress=False, stop_after_epochs=1)
    assert stopped["interrupted_after_epoch"] == 1
    outcomes = fit_population(configs, run_dirs=run_dirs, data_dir=mnist_dir, progress=False, resume=True)
    assert all(isinstance(outcome, dict) for outcome in outcomes), outcomes
    for k in range(len(TRIALS)):
        together, alone = safe_load(run_dirs[k] / CHECKPOINT), safe_load(alone_runs[k] / CHECKPOINT)
        assert together["state"]["epoch"] == alone["state"]["epoch"] == 2
        for name, value in alone["model"].items():
            torch.testing.assert_close(together["model"][name], value, **TOLERANCE)
    assert len((run_dirs[1] / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_run_stopped_before_its_result_is_finished_without_another_epoch(mnist_dir, tmp_path, alone_runs):
    """Killed after its last epoch's checkpoint but before result.json (a study's Ctrl-C in the final
    evaluation): in a population, as alone, it is finished from that checkpoint, not trained again."""
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(alone_runs[0], stopped)
    (stopped / RESULT).unlink()
    (stopped / WEIGHTS).unlink()
    configs = [tiny(*trial) for trial in TRIALS[:2]]
    outcomes = fit_population(
        configs, run_dirs=[stopped, tmp_path / "fresh"], data_dir=mnist_dir, progress=False, resume=True
    )
    result, alone = outcomes[0], read_json(alone_runs[0] / RESULT)
    assert isinstance(result, dict) and result["epochs_run"] == alone["epochs_run"] == 2
    assert result["test_error_pct"] == alone["test_error_pct"] and (stopped / WEIGHTS).is_file()
    assert len(read_metrics(stopped)) == 2  # no third epoch
    assert isinstance(outcomes[1], dict) and outcomes[1]["epochs_run"] == 2  # its partner trained alone


def test_a_trial_whose_run_another_process_trains_is_handed_back_and_the_others_train(mnist_dir, tmp_path):
    """A study's unit that another study shares: refused at once (RunBusy), as ``fit`` refuses it, rather
    than waited for while the population holds its other runs."""
    from attention.runs import RunBusy, holding_run

    run_dirs = [tmp_path / "busy", tmp_path / "free"]
    run_dirs[0].mkdir()
    with holding_run(run_dirs[0]):  # "another process" (a lock is per open file, so this one counts)
        outcomes = fit_population(
            [tiny(*trial) for trial in TRIALS[:2]], run_dirs=run_dirs, data_dir=mnist_dir, progress=False
        )
    assert isinstance(outcomes[0], RunBusy) and not (run_dirs[0] / CHECKPOINT).exists()
    assert isinstance(outcomes[1], dict) and outcomes[1]["epochs_run"] == 2


def test_a_diverged_trial_fails_alone_and_a_pruned_one_stays_resumable(mnist_dir, tmp_path, alone_runs):
    # trial 1 diverges (a learning rate no model survives), trial 2's callback stops it after epoch 1 as a
    # pruner would; trial 0 must still end exactly where it ends alone
    configs = [tiny(*TRIALS[0]), tiny(5, 1e30, 0.1), tiny(*TRIALS[2])]
    run_dirs = [tmp_path / f"trial{k}" for k in range(3)]

    class Pruned(Exception):
        pass

    reported: list[tuple[int, int, bool]] = []

    def on_epoch(k: int, row: dict, final: bool) -> None:
        reported.append((k, row["epoch"], final))
        if k == 2:
            raise Pruned(f"pruned after epoch {row['epoch']}")

    ended: list[int] = []
    held_at_end: list[bool] = []

    def on_end(k: int, _: object) -> None:
        ended.append(k)
        held_at_end.append(run_is_busy(run_dirs[k]))  # a trial's run is let go as soon as it leaves

    outcomes = fit_population(
        configs, run_dirs=run_dirs, data_dir=mnist_dir, progress=False, on_epoch=on_epoch, on_end=on_end
    )
    assert held_at_end == [False, False, False]
    assert isinstance(outcomes[1], AttentionError) and "became" in str(outcomes[1])
    assert isinstance(outcomes[2], Pruned)
    assert not (run_dirs[2] / RESULT).exists() and safe_load(run_dirs[2] / CHECKPOINT)["state"]["epoch"] == 1
    assert isinstance(outcomes[0], dict) and sorted(ended) == [0, 1, 2] and ended[-1] == 0
    # the callback hears which epoch is a trial's last (a search never prunes there)
    epochs = configs[0].train.epochs
    heard = [(epoch, final) for k, epoch, final in reported if k == 0]
    assert heard == [(epoch, epoch == epochs) for epoch in range(1, epochs + 1)]
    together, alone = (
        safe_load(run_dirs[0] / CHECKPOINT)["model"],
        safe_load(alone_runs[0] / CHECKPOINT)["model"],
    )
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, **TOLERANCE)
    # the pruned trial continues alone from the population's checkpoint to the same weights
    fit(configs[2], run_dir=run_dirs[2], data_dir=mnist_dir, progress=False, resume=True)
    resumed, reference = (
        safe_load(run_dirs[2] / CHECKPOINT)["model"],
        safe_load(alone_runs[2] / CHECKPOINT)["model"],
    )
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, **TOLERANCE)


def test_a_search_with_populations_runs_each_draw_once_as_its_own_trial(mnist_dir, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from attention.engine import KEY
    from attention.search import draws, load_search, run_search
    from attention.storage import open_storage

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text('[data]\ntask = "mnist"\n')
    budget = ", ".join(f'"{key}" = {value}' for key, value in TINY.items())
    search_file = tmp_path / "tiny-search.toml"
    search_file.write_text(tiny_search_text(budget, pruner="median"))
    storage = f"journal:{tmp_path / 'search.journal'}"
    options = {"storage": storage, "runs_dir": tmp_path / "runs", "data_dir": mnist_dir, "progress": False}
    run_search(search_file, population=3, workers=1, **options)  # a population of 3, then one alone
    trials = optuna.load_study(study_name="tiny-search", storage=open_storage(storage)).get_trials()
    assert len(trials) == 4 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    drawn = draws(load_search(search_file))
    for trial in trials:
        assert trial.params == drawn[int(trial.user_attrs[KEY].split()[1])]
        run_dir = Path(trial.user_attrs["run_dir"])
        assert (run_dir / "config.json").is_file() and len(trial.intermediate_values) >= 1
        if trial.state == TrialState.COMPLETE:
            assert read_json(run_dir / RESULT)["validation_error_pct"] == trial.value
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # the last draw, left without partners, trains alone by ``fit``, whose result has no population size
    sizes = {read_json(Path(t.user_attrs["run_dir"]) / RESULT).get("population_size") for t in complete}
    # the first three train together and cannot be pruned (startup_trials = 1: none had finished when they
    # reported, and no trial is pruned at its last epoch)
    assert 3 in sizes and sizes <= {None, 3}
    run_search(search_file, population=3, workers=1, **options)
    assert len(optuna.load_study(study_name="tiny-search", storage=open_storage(storage)).get_trials()) == 4
    with pytest.raises(AttentionError, match="population"):
        run_search(search_file, population=0, **options)


def test_the_population_bench_compares_the_trials_alone_with_populations_on_every_core():
    from attention.bench_population import _stepper, cpu_layouts, format_population, gpu_layouts

    small = {**TINY, "data.task": "mnist"}
    for population in (1, 2):  # the step each layout times runs, alone and stacked
        _stepper(population, small, torch.device("cpu"))()

    alone, together, split = cpu_layouts(8, 2)
    assert (alone.processes, alone.threads, alone.population) == (2, 1, 1)
    assert (together.processes, together.threads, together.population) == (1, 2, 8)
    assert (split.processes, split.threads, split.population) == (2, 1, 4)
    assert [layout.population for layout in gpu_layouts(8)] == [1, 1, 8, 64]
    rows = [
        {"layout": alone.label, "images_per_s": 1000.0},
        {"layout": together.label, "images_per_s": 1600.0},
    ]
    lines = format_population(rows)
    assert "1.60x" in lines[-1] and "summed over the trials" in lines[0]


def test_the_population_sweep_times_each_size_and_stops_where_the_memory_ends(monkeypatch):
    from attention import bench_population
    from attention.bench_population import format_saturation, saturation

    small = {**TINY, "data.task": "mnist"}
    rows = saturation(small, device="cpu", sizes=(1, 2), seconds=0.0)
    assert [row["population"] for row in rows] == [1, 2]
    assert all(row["images_per_s"] > 0 and row["step_ms"] > 0 for row in rows)
    assert "1 trial alone" in format_saturation(rows)[3] and "1.00x" in format_saturation(rows)[3]

    real_stepper = bench_population._stepper

    def out_of_memory_above_two(population, overrides, device):
        if population > 2:
            raise torch.cuda.OutOfMemoryError("fake: the device is full")
        return real_stepper(population, overrides, device)

    monkeypatch.setattr(bench_population, "_stepper", out_of_memory_above_two)
    rows = saturation(small, device="cpu", sizes=(1, 2, 4, 8), seconds=0.0)
    assert [row["population"] for row in rows] == [1, 2, 4] and rows[-1]["out_of_memory"]
    assert "out of the device's memory" in format_saturation(rows)[-1]


def test_a_study_trains_the_seeds_of_a_row_as_one_population_and_a_baseline_alone(mnist_dir, tmp_path):
    """``study run --population K``: each stage's seeds of a RAM row are one population (the second stage
    too, each seed from its own first stage's weights), ending where each seed would alone; the FC row,
    which cannot be stacked, trains alone."""
    from attention.study import Unit, load_study, unit_config, unit_run
    from attention.study_run import run_study

    (tmp_path / "recipes").mkdir()
    model = "\n".join(f"{key.split('.')[-1]} = {value}" for key, value in TINY.items() if "glimpse." in key)
    (tmp_path / "recipes" / "tiny.toml").write_text(
        f'[data]\ntask = "mnist"\n[model]\nnum_glimpses = 2\n[model.glimpse]\n{model}\n'
        f"[model.core]\nhidden_size = {TINY['model.core.hidden_size']}\n"
    )
    budget = ", ".join(f'"{key}" = {value}' for key, value in TINY.items() if key.split(".")[0] != "model")
    study_file = tmp_path / "seeds.toml"
    study_file.write_text(
        f'title = "seeds"\nrecipe = "recipes/tiny.toml"\nseeds = [0, 1, 2]\nbudget = {{ {budget} }}\n'
        '[evaluation]\ndraws = 1\n[[row]]\nlabel = "fc"\n'
        'set = { "model.name" = "fc", "model.fc_hidden" = [16] }\n'
        '[[row]]\nlabel = "ram"\n[[row.stage]]\nset = { "train.learning_rate" = 1e-4 }\n'
    )
    runs = tmp_path / "runs"
    options = {"storage": f"journal:{tmp_path / 'seeds.journal'}", "runs_dir": runs, "progress": False}
    [summary] = run_study(study_file, population=3, workers=1, data_dir=mnist_dir, **options)
    assert summary["finished"] == summary["units"] == 9
    study = load_study(study_file)
    fc, ram = study.rows
    for seed in (0, 1, 2):
        assert "population_size" not in read_json(unit_run(Unit(fc, seed, 0), runs) / RESULT)  # alone
        for stage in (0, 1):
            assert read_json(unit_run(Unit(ram, seed, stage), runs) / RESULT)["population_size"] == 3
    second = unit_run(Unit(ram, 1, 1), runs)
    alone = fit(
        unit_config(Unit(ram, 1, 1), runs), run_dir=tmp_path / "alone", data_dir=mnist_dir, progress=False
    )
    assert alone["init_from_sha256"] == read_json(second / RESULT)["init_from_sha256"]  # seed 1's own stage 1
    for name, value in safe_load(tmp_path / "alone" / WEIGHTS).items():
        torch.testing.assert_close(safe_load(second / WEIGHTS)[name], value, **TOLERANCE)


def test_a_population_trial_handed_back_is_failed_for_a_retry_not_as_an_error():
    """record(): a busy run ends its trial as engine.run_trial's HandBack does (retried once its run is
    free); a diverged loss is an error, kept until a later command."""
    import optuna
    from optuna.trial import TrialState

    from attention.engine import ENDED, ERROR
    from attention.population_work import record
    from attention.runs import RunBusy

    study = optuna.create_study()
    busy, diverged = study.ask(), study.ask()
    record(study, study._storage, busy, RunBusy("another process is training it"))
    record(study, study._storage, diverged, AttentionError("loss is nan"))
    busy_frozen, diverged_frozen = study.get_trials()
    assert busy_frozen.state == diverged_frozen.state == TrialState.FAIL
    assert busy_frozen.user_attrs == {ENDED: "handed back"}
    assert diverged_frozen.user_attrs == {ERROR: "loss is nan"}
