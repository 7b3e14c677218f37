"""Markdown tables rendered from run directories only (``config.json`` + ``result.json``)."""

from __future__ import annotations

from pathlib import Path

from attention import AttentionError
from attention.runs import RESULT, find_run, load_run_config, read_json


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
    from attention.config import TrainConfig
    from attention.train import compiled_part

    t = config.train
    return (
        f"{t.optimizer} lr {t.learning_rate:g} {t.schedule}"
        + (f", batch {t.batch_size}" if t.batch_size != TrainConfig().batch_size else "")
        + (f", clip {t.grad_clip:g}" if t.grad_clip else "")
        + (", compiled" if compiled_part(config) else "")
    )


def epochs_label(result: dict) -> str:
    """Epochs run, and of how many when a stopping rule ended the run before its schedule did."""
    run, budget = result["epochs_run"], result.get("epochs_budget", result["epochs_run"])
    stopped = result.get("stopped_because", "epochs")
    if stopped == "epochs" or run >= budget:
        return str(run)
    return f"{run} of {budget} ({stopped.replace('_', ' ')})"


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
        result = read_json(run_dir / RESULT)
        rows.append(
            f"| {task_label(result['data'])} | {describe(config)} | {training_label(config)} | "
            + (f"{paper[index]} | " if paper is not None else "")
            + f"{result['test_error_pct']:.2f}% "
            f"| {result['test_error_sampled_pct']:.2f}% | {result['n_test']} | {epochs_label(result)} "
            f"| {time_label(result)} | {result['seed']} | `{run_dir}` |"
        )
    return "\n".join(rows) + "\n"


def study_rows(study_file: Path, runs_dir: Path) -> tuple[str, list[tuple[Path, dict]]]:
    """A study file's title and, for each row, the run its config hashes to and the row itself. A row names
    a ``config`` file, may ``set`` overrides on top of it (``set = { "train.seed" = 2 }``, as ``--set`` does
    on the command line), and may give the ``paper``'s number and a short ``label`` for figure legends."""
    from attention.config import Config, flatten, load_toml, tomllib, with_overrides
    from attention.train import resolve_config

    try:
        study = tomllib.loads(Path(study_file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise AttentionError(f"cannot read study file {study_file}: {error}") from None
    rows = []
    for row in study.get("row", []):
        if "config" not in row:
            raise AttentionError(f'{study_file}: every [[row]] needs a config = "studies/....toml"')
        overrides = row.get("set", {})
        if not isinstance(overrides, dict):
            raise AttentionError(
                f'{study_file}: a row\'s set must be a table, e.g. set = {{ "train.seed" = 2 }}'
            )
        config = with_overrides(with_overrides(Config(), load_toml(row["config"])), flatten(overrides))
        rows.append((find_run(resolve_config(config), Path(runs_dir)), row))
    return study.get("title", Path(study_file).stem), rows


def study_table(study_file: Path, runs_dir: Path) -> str:
    """Render a study file's rows (:func:`study_rows`) as a ``## title`` section with its table."""
    title, rows = study_rows(study_file, runs_dir)
    run_dirs = [run_dir for run_dir, _ in rows]
    return f"## {title}\n\n" + results_table(run_dirs, [row.get("paper", "") for _, row in rows])


def replace_table_section(document: str, rendered: str) -> str:
    """``document`` with the section ``rendered`` (a study table: its ``## title`` line, a blank line and the
    table) put in place of the one under the same heading: the heading, the blank lines after it and the
    table's lines, nothing more, so the prose around it stays as written."""
    heading = rendered.splitlines()[0]
    lines = document.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == heading]
    if len(starts) != 1:
        found = "is not" if not starts else "is more than once"
        raise AttentionError(
            f"the heading '{heading}' {found} in the document: add it once where the table goes"
        )
    end = starts[0] + 1
    while end < len(lines) and not lines[end].strip():
        end += 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "".join(lines[: starts[0]]) + rendered + "".join(lines[end:])
