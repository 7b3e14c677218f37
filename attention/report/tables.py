"""Markdown tables rendered from run directories only (``config.json`` + ``result.json``)."""

from __future__ import annotations

from pathlib import Path

from attention.runs import RESULT, load_run_config, read_json


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
        return f"soft attention (filterbank), {m.num_glimpses} glimpses, {r.grid_size}x{r.grid_size}"
    policy = "random glimpses" if m.where.policy == "random" else "glimpses"
    scales = f"{r.num_scales} scale" + ("s" if r.num_scales > 1 else "")
    return f"RAM, {m.num_glimpses} {policy}, {r.patch_size}x{r.patch_size}, {scales}, {m.core.name} core"


def task_label(data: dict) -> str:
    if data["task"] == "mnist":
        return "MNIST 28x28"
    label = f"translated {data['canvas_size']}x{data['canvas_size']}"
    if data["task"] == "cluttered":
        piece = f"{data['clutter_size']}x{data['clutter_size']}"
        label = f"cluttered {label} ({data['clutter_count']} pieces {piece})"
    return label


def results_table(run_dirs: list[Path]) -> str:
    rows = [
        "| task | model | test error (mean loc.) | test error (sampled) | n_test | epochs | train time "
        "| seed | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run_dir in run_dirs:
        config = load_run_config(run_dir)
        result = read_json(run_dir / RESULT)
        rows.append(
            f"| {task_label(result['data'])} | {describe(config)} | {result['test_error_pct']:.2f}% "
            f"| {result['test_error_sampled_pct']:.2f}% | {result['n_test']} | {result['epochs_run']} "
            f"| {result['train_seconds'] / 60:.1f} min | {result['seed']} | `{run_dir}` |"
        )
    return "\n".join(rows) + "\n"
