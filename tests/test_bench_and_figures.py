import numpy as np
import pytest
import torch

from attention import bench, bench_scaling
from attention.report.figures import (
    plot_error_against_glimpses,
    plot_glimpse_path,
    plot_scaling,
    retina_view,
    save_figure,
)


def test_training_throughput_reports_median_min_max():
    row = bench.training_throughput(
        bench.TRAINING_CASES[0], batch=16, warmup=1, repeats=3, mnist=None, device=torch.device("cpu")
    )
    assert row["min"] <= row["images_per_s"] <= row["max"] and row["min"] > 0


def test_inference_cost_row_has_the_documented_fields():
    row = bench_scaling.inference_cost(
        "RAM",
        bench_scaling.SCALING_MODELS["RAM (6 glimpses 12x12, 3 scales)"],
        60,
        batch=2,
        warmup=1,
        repeats=3,
        device=torch.device("cpu"),
    )
    assert {"model", "image_size", "batch", "ms_per_image"} <= set(row) and row["ms_per_image"] > 0


def synthetic_scaling():
    rows = []
    for size in (60, 100, 200):
        rows.append({"model": "RAM x", "image_size": size, "batch": 128, "ms_per_image": 1.0})
        rows.append({"model": "CNN y", "image_size": size, "batch": 128, "ms_per_image": size / 100})
        rows.append({"model": "RAM x", "image_size": size, "batch": 1, "ms_per_image": 2.0})
        rows.append({"model": "CNN y", "image_size": size, "batch": 1, "ms_per_image": 0.5})
    return {"training": [], "scaling": rows}


def test_crossover_is_found_between_the_sizes_where_the_cnn_overtakes_ram():
    notes = bench_scaling.crossovers(synthetic_scaling())
    assert "batch 128: the CNN becomes dearer than RAM between 100 and 200 pixels" in notes
    assert "batch 1: the CNN stays cheaper than RAM up to 200x200" in notes


def test_scaling_figure_renders_a_png(tmp_path):
    out = save_figure(lambda ax: plot_scaling(ax, synthetic_scaling()["scaling"]), tmp_path / "scaling.png")
    assert out.stat().st_size > 5_000


def test_glimpse_path_figure_renders_a_png(tmp_path):
    image = np.zeros((28, 28), dtype=np.float32)
    path = np.array([[0.0, 0.0], [0.5, -0.5], [-0.2, 0.3]])
    out = save_figure(lambda ax: plot_glimpse_path(ax, image, path, correct=False), tmp_path / "path.png")
    assert out.stat().st_size > 2_000


def test_retina_view_paints_each_scale_at_its_true_size():
    patches = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 0.5)]).astype(np.float32)
    view = retina_view(patches, np.array([0.0, 0.0]), 8, 8)
    # the finest 2x2 at the centre (rows/cols 3..4), the coarser 4x4 around it (rows/cols 2..5)
    assert view[3:5, 3:5].min() == 1.0 and view[2, 2] == 0.5 and view[0, 0] == 0.0


def test_rounds_are_pooled_into_one_median_over_all_their_timings():
    fast = {"config": "c", "batch": 2, **bench._summary([1.0, 1.0], 2)}
    slow = {"config": "c", "batch": 2, **bench._summary([4.0, 4.0, 4.0], 2)}
    fast["data_generation"], slow["data_generation"] = bench._summary([1.0], 2), bench._summary([2.0], 2)
    pooled = bench.pool_rounds([fast, slow])
    # rates 2, 2, 0.5, 0.5, 0.5: the median of the pooled timings, not the mean of the rounds' medians
    assert pooled["images_per_s"] == 0.5 and pooled["min"] == 0.5 and pooled["max"] == 2.0
    assert pooled["rounds"] == 2 and len(pooled["seconds"]) == 5
    assert pooled["data_generation"]["images_per_s"] == 1.5
    cost = bench_scaling.pool_cost_rounds(
        [
            {"model": "m", "image_size": 60, "batch": 1, "seconds": [0.001]},
            {"model": "m", "image_size": 60, "batch": 1, "seconds": [0.003, 0.002]},
        ]
    )
    assert cost["ms_per_image"] == 2.0 and cost["rounds"] == 2


def test_bench_refuses_zero_rounds(capsys):
    import pytest

    from attention.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--rounds", "0"])
    assert exit_info.value.code != 0 and "--rounds" in capsys.readouterr().err


def test_an_interrupted_figure_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    import os

    import matplotlib.pyplot as plt
    import pytest

    out = tmp_path / "figure.png"
    save_figure(lambda ax: ax.plot([0, 1], [0, 1]), out)
    before = out.read_bytes()
    assert before.startswith(b"\x89PNG")

    def interrupted(source, target):
        raise KeyboardInterrupt  # stopped between writing the new figure and putting it in place

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_figure(lambda ax: ax.plot([0, 1], [1, 0]), out)
    assert out.read_bytes() == before
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind
    assert plt.get_fignums() == []


def test_figures_take_their_format_from_the_suffix(tmp_path):
    out = save_figure(lambda ax: ax.plot([0, 1], [0, 1]), tmp_path / "figure.svg")
    assert b"<svg" in out.read_bytes()[:500]


def test_saved_files_get_the_permissions_of_plainly_created_ones(tmp_path):
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = save_figure(lambda ax: ax.plot([0, 1], [0, 1]), tmp_path / "figure.png")
    assert os.stat(out).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_bench_measures_only_the_cases_asked_for_and_refuses_an_unknown_one(monkeypatch):
    from attention import AttentionError

    measured = []
    monkeypatch.setattr(
        bench,
        "training_throughput",
        lambda case, **_kw: (
            measured.append(case.overrides) or {"config": case.name, "batch": 1, **bench._summary([1.0], 1)}
        ),
    )
    result = bench.run(
        quick=True, cases="soft attention", scaling=False, data_dir="/nonexistent", kernels=False
    )
    assert [o.get("train.compile", False) for o in measured] == [False, True]
    assert all(o["model.reader.name"] == "filterbank" for o in measured)
    assert result["scaling"] == []
    with pytest.raises(AttentionError, match="no training case matches 'nothing'"):
        bench.run(quick=True, cases="nothing", scaling=False, data_dir="/nonexistent", kernels=False)


def test_bench_times_eager_cases_on_each_linear_kernel_beside_the_chosen_one(monkeypatch):
    from attention.linear import ONEDNN, PYTORCH

    monkeypatch.setattr(bench, "onednn_available", lambda: True)
    calls = []
    seconds = {None: 0.001, PYTORCH: 0.002, ONEDNN: 0.004}

    def fake(case, *, kernel=None, **_kw):
        calls.append((case.overrides.get("train.compile", False), kernel))
        return {"config": case.name, "batch": 1, **bench._summary([seconds[kernel]], 1)}

    monkeypatch.setattr(bench, "training_throughput", fake)
    result = bench.run(quick=True, rounds=2, cases="soft attention", scaling=False, data_dir="/nonexistent")
    # per round: the measured choice and both kernels forced, rotating which is first; then the compiled case
    assert calls == [
        (False, None), (False, PYTORCH), (False, ONEDNN), (True, None),
        (False, PYTORCH), (False, ONEDNN), (False, None), (True, None),
    ]  # fmt: skip
    eager, compiled = result["training"]
    assert (
        eager["kernels"][PYTORCH]["images_per_s"] == 500 and eager["kernels"][ONEDNN]["images_per_s"] == 250
    )
    assert len(eager["kernels"][PYTORCH]["seconds"]) == 2 and "kernels" not in compiled
    table = bench.format_table(result)
    assert table.startswith("Linear layers: ") and "\nCPU: " in table  # from the kernel report
    assert "1000 [1000, 1000]   pytorch 500 [500, 500]   onednn 250 [250, 250]" in table


@pytest.mark.parametrize("forced", ["pytorch", "onednn"])
def test_training_throughput_runs_every_linear_product_on_the_forced_kernel(monkeypatch, forced):
    import torch.nn.functional as F

    from attention import linear as kernels

    if kernels._PRODUCT is None:  # where oneDNN's operator is missing, pretend: only counting fakes run
        monkeypatch.setattr(kernels, "_PRODUCT", F.linear)
    calls = dict.fromkeys(kernels._KERNELS, 0)

    def counted(name):
        def kernel(x, weight, bias):
            calls[name] += 1
            return F.linear(x, weight, bias)

        return kernel

    for name in list(kernels._KERNELS):
        monkeypatch.setitem(kernels._KERNELS, name, counted(name))
    row = bench.training_throughput(
        bench.TRAINING_CASES[0], batch=4, warmup=0, repeats=1, device=torch.device("cpu"), kernel=forced
    )
    assert row["images_per_s"] > 0
    assert calls[forced] > 0 and sum(calls.values()) == calls[forced]  # none on the other kernel


def test_processes_trained_together_report_their_images_per_second_over_the_window():
    from attention.bench_layouts import _prepare
    from attention.bench_together import train_together

    overrides = dict(bench.TRAINING_CASES[0].overrides, **{"train.batch_size": 8})
    # two real processes of the layout bench: each builds and warms up, waits for the other, then trains
    rates = train_together(_prepare, [(1, overrides)] * 2, warmup_steps=1, window_s=0.5)
    assert len(rates) == 2 and all(rate > 0 for rate in rates)


def test_layout_rows_split_the_cores_into_processes_times_threads(monkeypatch):
    from attention import bench_layouts

    monkeypatch.setattr(bench_layouts, "usable_cores", lambda: 4)
    calls = []

    def fake_together(prepare, jobs, *, warmup_steps, window_s):
        calls.append((len(jobs), jobs[0][0]))  # (processes, threads each)
        return [100.0] * len(jobs)

    monkeypatch.setattr(bench_layouts, "train_together", fake_together)
    rows = bench_layouts.measure_layouts({}, window_s=10.0)
    assert calls == [(1, 4), (2, 2), (4, 1)]
    assert [row["images_per_s"] for row in rows] == [100.0, 200.0, 400.0]
    assert "<- fastest" in bench_layouts.format_layouts(rows)[-1]


def test_the_glimpse_figure_shows_our_means_with_intervals_the_papers_points_and_targets():
    import matplotlib.pyplot as plt

    series = {
        "RAM": [
            {"glimpses": 8, "paper": 5.23, "target": 4.04, "mean": 4.77, "low": 4.35, "high": 5.19},
            {"glimpses": 4, "paper": 7.10, "target": None, "mean": 4.79, "low": None, "high": None},
            {"glimpses": 6, "paper": 5.88, "target": None},  # not run yet: the paper's point only
        ]
    }
    fig, ax = plt.subplots()
    plot_error_against_glimpses(ax, series)
    [ours] = ax.containers  # errorbar's: the means' line, the caps, the bars
    assert ours.get_label() == "RAM (ours)"
    means, caps, _ = ours.lines
    assert list(means.get_xdata()) == [4, 8] and list(means.get_ydata()) == [4.79, 4.77]
    # one seed at 4 glimpses: no interval (its caps sit on the mean); three at 8: the 95% interval
    assert sorted(float(y) for cap in caps for y in cap.get_ydata()) == [4.35, 4.79, 4.79, 5.19]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["RAM (paper)"].get_xdata()) == [4, 6, 8]
    assert list(lines["RAM (target)"].get_ydata()) == [4.04]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)
