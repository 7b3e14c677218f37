"""Markdown tables of run directories (``config.json`` + ``result.json``), and the labels that name a run's
model and training in every table (studies use them too: :mod:`attention.report.study_report`)."""

from __future__ import annotations

from pathlib import Path

from attention import AttentionError
from attention.runs import RESULT, cut_short_by, load_run_config, read_json
from attention.tasks import require_report_command


def sizes_label(model) -> str:
    """', glimpse net 256/128/512, core 512' where the layer sizes differ from the defaults, else ''."""
    from attention.config import CoreConfig, GlimpseNetConfig

    g, default = model.glimpse, GlimpseNetConfig()
    label = ""
    if g != default:
        label += f", glimpse net {g.image_hidden}/{g.location_hidden}/{g.output_size}"
    if model.core.hidden_size != CoreConfig().hidden_size:
        label += f", core {model.core.hidden_size}"
    return label


def location_label(model) -> str:
    """How a Gaussian location policy differs from the defaults: its std, bound, first glimpse and which
    losses train the core (these change what a retina learns, so a table must show them)."""
    from attention.config import WhereConfig

    where, routing, default = model.where, model.routing, WhereConfig()
    label = ""
    if where.std != default.std:
        label += f", location std {where.std:g}"
    if where.bound == "none":
        label += ", unbounded locations"
    if where.initial != default.initial:
        label += f", first glimpse at the {where.initial}"
    trainers = [
        name
        for name, on in (
            ("REINFORCE", routing.reinforce_reaches_core),
            ("baseline", routing.baseline_reaches_core),
        )
        if on
    ]
    if trainers:
        label += f", {' and '.join(trainers)} also train{'s' if len(trainers) == 1 else ''} the core"
    return label


def describe(config) -> str:
    """A short human label of a run's model, e.g. 'RAM, 6 glimpses, 8x8, 1 scale'."""
    m = config.model
    if m.name == "fc":
        return f"FC, {len(m.fc_hidden)} layers ({'/'.join(map(str, m.fc_hidden))} hiddens)"
    if m.name == "cnn":
        kernel = f"{m.cnn_kernel}x{m.cnn_kernel}"
        return f"CNN, {m.cnn_filters} {kernel} filters stride {m.cnn_stride}, {m.cnn_hidden} hiddens"
    r = m.reader
    if r.name == "filterbank":
        bound = ", centre bounded by tanh" if m.where.bound == "tanh" else ""
        return (
            f"soft attention (filterbank), {m.num_glimpses} glimpses, {r.grid_size}x{r.grid_size}, "
            f"{m.core.name} core{bound}{sizes_label(m)}"
        )
    policy = "random glimpses" if m.where.policy == "random" else "glimpses"
    scales = f"{r.num_scales} scale" + ("s" if r.num_scales > 1 else "")
    locations = location_label(m) if m.where.policy == "gaussian" else ""
    return (
        f"RAM, {m.num_glimpses} {policy}, {r.patch_size}x{r.patch_size}, {scales}, {m.core.name} core"
        f"{sizes_label(m)}{locations}"
    )


def training_label(config) -> str:
    from attention.build import compiled_part
    from attention.config import TrainConfig

    t = config.train
    return (
        f"{t.optimizer} lr {t.learning_rate:g} {t.schedule}"
        + (f", batch {t.batch_size}" if t.batch_size != TrainConfig().batch_size else "")
        + (f", clip {t.grad_clip:g}" if t.grad_clip else "")
        + (", compiled" if compiled_part(config) else "")
    )


def epochs_label(result: dict, *, why: bool = True) -> str:
    """Epochs run, and of how many when a stopping rule ended the run before its schedule did (with
    ``why``, which rule)."""
    stopped = cut_short_by(result)
    if stopped is None:
        return str(result["epochs_run"])
    return f"{result['epochs_run']} of {result['epochs_budget']}" + (
        f" ({stopped.replace('_', ' ')})" if why else ""
    )


def time_label(result: dict) -> str:
    """Training time, and where it ran when that was not the CPU (times on other devices differ)."""
    device = result.get("device", "cpu")
    return f"{result['train_seconds'] / 60:.1f} min" + ("" if device == "cpu" else f" ({device})")


def task_label(data: dict) -> str:
    if data["task"] == "mnist":
        return "MNIST 28x28"
    label = f"translated {data['canvas_size']}x{data['canvas_size']}"
    if data["task"] == "cluttered":
        piece = f"{data['clutter_size']}x{data['clutter_size']}"
        label = f"cluttered {label} ({data['clutter_count']} pieces {piece})"
    return label


def results_table(run_dirs: list[Path], paper: list[str] | None = None) -> str:
    """One row per finished run; ``paper`` adds a column of the paper's numbers, in the same order."""
    rows = [
        "| task | model | training | test error (mean loc.) | test error (sampled) | n_test | epochs "
        "| train time | seed | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if paper is not None:
        rows[0] = rows[0].replace("| test error (mean loc.) |", "| paper | test error (mean loc.) |")
        rows[1] += " --- |"
    for index, run_dir in enumerate(run_dirs):
        if not (run_dir / RESULT).exists():
            raise AttentionError(f"{run_dir} has no {RESULT}: the run is missing or unfinished")
        config = load_run_config(run_dir)
        require_report_command(config.data.task, "glimpses", "a table of test errors")
        result = read_json(run_dir / RESULT)
        rows.append(
            f"| {task_label(result['data'])} | {describe(config)} | {training_label(config)} | "
            + (f"{paper[index]} | " if paper is not None else "")
            + f"{result['test_error_pct']:.2f}% "
            f"| {result['test_error_sampled_pct']:.2f}% | {result['n_test']} | {epochs_label(result)} "
            f"| {time_label(result)} | {result['seed']} | `{run_dir}` |"
        )
    return "\n".join(rows) + "\n"
