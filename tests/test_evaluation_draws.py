"""The study protocol's evaluation over several draws (attention.report.evaluation)."""

import torch

from attention.build import make_model, resolve_config
from attention.config import Config, with_overrides
from attention.data.tasks import FixedSet
from attention.evaluate import error_pct
from attention.report.evaluation import evaluate_draws, unpack


def tiny_set(count: int = 64) -> FixedSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)
    return FixedSet(images, torch.randint(0, 10, (count,), generator=generator))


def model_of(overrides: dict):
    config = resolve_config(with_overrides(Config(), {"data.task": "mnist", **overrides}))
    return make_model(config, torch.device("cpu"))


def counting_unrolls(model) -> list:
    calls = []
    unroll = model.unroll

    def counted(*args, **kwargs):
        calls.append(1)
        return unroll(*args, **kwargs)

    model.unroll = counted
    return calls


def test_draw_zero_is_the_single_pass_of_the_run_and_a_random_first_glimpse_is_drawn_anew_each_time():
    model, dataset = model_of({"model.num_glimpses": 2}), tiny_set()
    calls = counting_unrolls(model)
    measured = evaluate_draws(model, dataset, draws=4, seed=11, batch_size=16, device=torch.device("cpu"))
    passes = len(calls)
    single = error_pct(
        model,
        dataset,
        sample=False,
        generator=torch.Generator().manual_seed(11),
        batch_size=16,
        device=torch.device("cpu"),
    )
    assert measured["errors_pct"][0] == single
    assert len(measured["errors_pct"]) == 4 and passes == 4 * 4  # 4 draws of 4 batches
    assert measured["first_correct"].sum() == round(len(dataset.labels) * (100 - single) / 100)
    assert 0 <= measured["averaged_error_pct"] <= 100


def test_a_model_that_draws_nothing_random_counts_one_pass_for_every_draw():
    model = model_of({"model.num_glimpses": 2, "model.where.initial": "center"})
    calls = counting_unrolls(model)
    measured = evaluate_draws(model, tiny_set(), draws=5, seed=3, batch_size=16, device=torch.device("cpu"))
    assert len(measured["errors_pct"]) == 5 and len(set(measured["errors_pct"])) == 1
    assert len(calls) == 4  # one pass of 4 batches
    assert measured["averaged_error_pct"] == measured["errors_pct"][0]


def test_correctness_bits_survive_packing():
    from attention.report.evaluation import _pack

    bits = torch.rand(37, generator=torch.Generator().manual_seed(1)).numpy() > 0.5
    assert (unpack(_pack(bits), 37) == bits).all()


def test_a_run_without_weights_reports_its_recorded_single_pass_and_nothing_else(tmp_path):
    from pathlib import Path

    from attention.config import to_dict
    from attention.report.evaluation import run_evaluation
    from attention.runs import write_json

    run = tmp_path / "probe"
    run.mkdir()
    write_json(run / "config.json", to_dict(resolve_config(with_overrides(Config(), {"data.task": "mnist"}))))
    write_json(run / "result.json", {"test_error_pct": 27.0, "n_test": 10000, "protocol": {"test_seed": 2}})
    own = run_evaluation(Path(run), test_seed=None, draws=10, cache_dir=tmp_path / "cache")
    assert own["mean_error_pct"] == 27.0 and own["draws"] == 1 and own["weights_kept"] is False
    assert own["first_draw_correct"] is None and own["averaged_error_pct"] is None
    assert run_evaluation(Path(run), test_seed=3, draws=10, cache_dir=tmp_path / "cache") is None


def test_the_cache_drops_what_another_cache_version_measured(mnist_dir, tmp_path):
    from pathlib import Path

    from attention.config import to_dict
    from attention.report.evaluation import CACHE_VERSION, run_evaluation
    from attention.runs import WEIGHTS, read_json, write_json

    overrides = {"data.task": "mnist", "data.eval_limit": 50, "model.num_glimpses": 1}
    config = resolve_config(with_overrides(Config(), overrides))
    run = tmp_path / "untrained"
    run.mkdir()
    write_json(run / "config.json", to_dict(config))
    torch.save(make_model(config, torch.device("cpu")).state_dict(), run / WEIGHTS)
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = {"test seed 9, 2 draws": {"mean_error_pct": 0.0}}
    write_json(cache / f"{run.name}.json", {"version": CACHE_VERSION - 1, "evaluations": stale})
    fresh = run_evaluation(Path(run), test_seed=None, draws=2, data_dir=mnist_dir, cache_dir=cache)
    stored = read_json(cache / f"{run.name}.json")
    assert stored["version"] == CACHE_VERSION
    assert list(stored["evaluations"]) == [f"test seed {config.data.test_seed}, 2 draws"]
    assert stored["evaluations"][f"test seed {config.data.test_seed}, 2 draws"] == fresh


def test_a_cached_evaluation_counts_only_for_the_weights_it_measured(mnist_dir, tmp_path):
    from pathlib import Path

    from attention.config import to_dict
    from attention.report.evaluation import run_evaluation
    from attention.runs import WEIGHTS, read_json, write_json

    overrides = {"data.task": "mnist", "data.eval_limit": 50, "model.num_glimpses": 1}
    config = resolve_config(with_overrides(Config(), overrides))
    run = tmp_path / "runs" / "trained-further"
    run.mkdir(parents=True)
    write_json(run / "config.json", to_dict(config))
    model = make_model(config, torch.device("cpu"))
    torch.save(model.state_dict(), run / WEIGHTS)
    cache = tmp_path / "cache"
    first = run_evaluation(Path(run), test_seed=None, draws=2, data_dir=mnist_dir, cache_dir=cache)
    # a planted number stands in for what a cache hit returns: it is returned while the weights are the same
    stored = read_json(cache / f"{run.name}.json")
    key = next(iter(stored["evaluations"]))
    stored["evaluations"][key] = {**first, "mean_error_pct": -1.0}
    write_json(cache / f"{run.name}.json", stored)
    hit = run_evaluation(Path(run), test_seed=None, draws=2, data_dir=mnist_dir, cache_dir=cache)
    assert hit["mean_error_pct"] == -1.0
    # the run is trained further (new weights): the planted entry no longer counts, and is replaced
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    torch.save(model.state_dict(), run / WEIGHTS)
    again = run_evaluation(Path(run), test_seed=None, draws=2, data_dir=mnist_dir, cache_dir=cache)
    assert again["mean_error_pct"] >= 0.0
    assert read_json(cache / f"{run.name}.json")["evaluations"][key] == again
