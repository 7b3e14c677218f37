import json
from pathlib import Path

import pytest

from attention import AttentionError
from attention.build import resolve_config
from attention.config import Config, config_hash, load_toml, to_dict, with_overrides
from attention.report.tables import results_table
from attention.runs import write_json


def fake_run(runs_dir: Path, config: Config, error: float) -> Path:
    """A finished run as the trainer leaves it, as far as tables read it (config.json and result.json)."""
    run_dir = runs_dir / config_hash(config)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", to_dict(config))
    write_json(
        run_dir / "result.json",
        {
            "data": {"task": "mnist", "canvas_size": 28},
            "test_error_pct": error,
            "test_error_sampled_pct": error + 0.5,
            "n_test": 10000,
            "epochs_run": 3,
            "train_seconds": 120.0,
            "seed": config.train.seed,
        },
    )
    return run_dir


def test_rows_name_non_default_sizes_a_cut_schedule_and_a_gpu(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        '[data]\ntask = "mnist"\n[model.core]\nhidden_size = 512\n[model.glimpse]\noutput_size = 64\n'
        "[train]\nepochs = 10\ncompile = true\n"
    )
    config = resolve_config(with_overrides(Config(), load_toml(recipe)))
    run_dir = fake_run(tmp_path / "runs", config, 2.0)
    result = json.loads((run_dir / "result.json").read_text())
    result.update(epochs_budget=10, stopped_because="time_budget", device="cuda")
    write_json(run_dir / "result.json", result)
    row = results_table([run_dir]).splitlines()[-1]
    assert "glimpse net 128/128/64, core 512" in row
    assert "cosine, compiled |" in row
    assert "| 3 of 10 (time budget) |" in row
    assert "| 2.0 min (cuda) |" in row
    # a run that ran its whole schedule on the CPU says neither
    result.update(epochs_run=10, stopped_because="epochs", device="cpu")
    write_json(run_dir / "result.json", result)
    row = results_table([run_dir]).splitlines()[-1]
    assert "| 10 | 2.0 min |" in row


def test_a_study_section_is_replaced_between_its_markers_and_the_prose_around_it_kept():
    from attention.report.study_report import replace_section

    document = (
        "# Results\n\nprose before\n<!-- study: seeds -->\nold table\n<!-- end of study: seeds -->\nkept\n"
    )
    updated = replace_section(document, "seeds", "## seeds\n\nnew table\n")
    assert updated == (
        "# Results\n\nprose before\n<!-- study: seeds -->\n## seeds\n\nnew table\n"
        "<!-- end of study: seeds -->\nkept\n"
    )
    with pytest.raises(AttentionError, match="<!-- study: other -->"):
        replace_section(document, "other", "x\n")


def test_retina_rows_name_the_location_policy_and_batch_when_they_differ_from_the_defaults(tmp_path):
    from attention.report.tables import describe, training_label

    retina = {"model.reader.name": "retina", "model.where.policy": "gaussian"}
    plain = with_overrides(Config(), retina)
    assert describe(plain).endswith("rnn core") and "batch" not in training_label(plain)
    varied = with_overrides(
        plain,
        {
            "model.where.std": 0.2,
            "model.where.bound": "none",
            "model.routing.reinforce_reaches_core": True,
            "model.routing.baseline_reaches_core": True,
            "train.batch_size": 32,
        },
    )
    label = describe(varied)
    assert "location std 0.2" in label and "unbounded locations" in label
    assert "REINFORCE and baseline also train the core" in label
    assert "batch 32" in training_label(varied)
    only_reinforce = with_overrides(plain, {"model.routing.reinforce_reaches_core": True})
    assert describe(only_reinforce).endswith(", REINFORCE also trains the core")


def test_report_curves_plots_a_metric_per_run(tmp_path):
    import matplotlib.pyplot as plt

    from attention.cli import main
    from attention.report.figures import plot_curves
    from attention.runs import read_metrics, write_metrics

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[data]\ntask = "mnist"\n[train]\nepochs = 3\nseed = 0\n')
    base = resolve_config(with_overrides(Config(), load_toml(recipe)))
    runs = []
    for seed, errors in ((0, [50.0, 30.0, 20.0]), (2, [60.0, 40.0, 10.0])):
        run = fake_run(tmp_path / "runs", with_overrides(base, {"train.seed": seed}), errors[-1])
        write_metrics(run, [{"epoch": e + 1, "val_error_pct": v} for e, v in enumerate(errors)])
        runs.append(run)
    fig, ax = plt.subplots()
    plot_curves(
        ax, [(f"seed {i}", read_metrics(run)) for i, run in zip((0, 2), runs, strict=True)], "val_error_pct"
    )
    assert ax.get_legend_handles_labels()[1] == ["seed 0", "seed 2"]
    assert list(ax.lines[1].get_ydata()) == [60.0, 40.0, 10.0]
    assert ax.get_yscale() == "linear"  # 60% to 10%: within a factor of 10
    plt.close(fig)
    out = tmp_path / "curves.png"
    assert main(["report", "curves", *map(str, runs), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_curves_of_a_dozen_rows_are_told_apart_and_an_error_spanning_decades_is_drawn_on_a_log_scale():
    import matplotlib.pyplot as plt

    from attention.report.figures import plot_curves

    def curve(*values: float) -> list[dict]:
        return [{"epoch": e + 1, "val_error_pct": v, "catch_rate_pct": v} for e, v in enumerate(values)]

    rows = [("1 random glimpse", curve(80.0, 55.0))] + [
        (f"{n} glimpses", curve(3.0, 1.0 + n / 10)) for n in range(11)
    ]
    fig, ax = plt.subplots()
    plot_curves(ax, rows, "val_error_pct")
    assert ax.get_yscale() == "log"  # 80% beside 1.1%: on a linear axis the low curves would overlap
    assert len({(line.get_color(), line.get_linestyle()) for line in ax.lines}) == len(rows)
    plt.close(fig)
    fig, ax = plt.subplots()
    plot_curves(ax, rows, "catch_rate_pct")  # not an error: its scale stays linear
    assert ax.get_yscale() == "linear"
    plt.close(fig)


def test_report_curves_refuses_a_metric_no_run_recorded_and_writes_nothing(tmp_path, capsys):
    from attention.cli import main
    from attention.runs import write_metrics

    run = fake_run(tmp_path / "runs", resolve_config(Config()), 2.0)
    write_metrics(run, [{"epoch": 1, "val_error_pct": 2.0, "train_loss": 0.1}])
    out = tmp_path / "curves.png"
    assert main(["report", "curves", str(run), "--metric", "val_eror_pct", "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "val_eror_pct" in message and "val_error_pct" in message and len(message.strip().splitlines()) == 1
    assert not out.exists()


def test_a_game_run_is_refused_by_the_image_tables_and_figures_naming_its_own_command(tmp_path):
    import subprocess
    import sys

    game = fake_run(tmp_path, with_overrides(Config(), {"data.task": "catch"}), 0.0)
    with pytest.raises(AttentionError, match=r"cannot show a 'catch' run: use `attention report catch`"):
        results_table([game])
    done = subprocess.run(  # --figure is refused before anything trains
        [sys.executable, "-m", "attention.cli", "train", "--set", "data.task=catch", "--figure", "x.png"]
        + ["--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    refusal = "error: glimpse figures cannot show a 'catch' run: use `attention report catch` for it\n"
    assert done.stderr == refusal
    assert not (tmp_path / "runs").exists()
