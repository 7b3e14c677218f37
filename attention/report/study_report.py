"""``attention study report``: a study's tables (Markdown and CSV), paired tests and figures, from its runs.

Each row's number is the mean over its seeds of one recipe (the last stage of each seed's chain), each
seed's number itself the mean over the evaluation draws of the study's protocol
(:mod:`attention.report.evaluation`), with the spread over seeds, a 95% t interval, the paper's number and
where it falls. Rows without finished runs say so. Declared pairs of rows get McNemar's exact test on the
same test images (both read by attention/report/study_results.py). Nothing here trains; everything is
read from run directories and the evaluation cache.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from attention import AttentionError
from attention.report.evaluation import evaluation_cache_dir
from attention.report.stats import PERCENT, seed_summary, where_paper_falls
from attention.report.study_results import (
    RowResult,
    SeedResult,
    collect,
    compare_rows,
    devices,
    epochs_text,
    minutes,
)
from attention.runs import DEFAULT_RUNS_DIR, cut_short_by
from attention.study import Study, load_study, study_folder


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _time_capped(seed: SeedResult) -> bool:
    return any(cut_short_by(r) == "time_budget" for r in seed.results)


def budget_lines(rows: list[RowResult]) -> list[str]:
    """A note on each row whose seeds did not train the same epochs because a time cap ended some of them
    before their schedule: a cap in seconds binds by how loaded the machine was, so it can cut one seed
    short and not another, and the row's mean is then not that of one budget. (Early stopping also ends
    seeds at different epochs, but by the recipe's own rule, so it is not flagged.)"""
    uneven = []
    for result in rows:
        texts = [epochs_text(s, why=True) for s in result.seeds]
        if len(set(texts)) > 1 and any(_time_capped(s) for s in result.seeds):
            parts = [f"s{s.seed} {text}" for s, text in zip(result.seeds, texts, strict=True)]
            uneven.append(f"- {result.row.label}: {'; '.join(parts)}")
    if not uneven:
        return []
    return [
        "",
        "Seeds that a time cap (`train.time_budget_s`) stopped at different epochs, so the row's mean mixes "
        "budgets (a cap in seconds binds by the machine's load):",
        "",
        *uneven,
    ]


def _error(evaluation: dict[str, Any] | None) -> float | None:
    return None if evaluation is None else evaluation["mean_error_pct"]


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def mean_text(values: list[float | None]) -> str:
    """The mean of the values, or 'n/a' when any is missing (a run whose weights were not kept)."""
    mean = _mean(values)
    return "n/a" if mean is None else f"{mean:.2f}"


def row_cells(result: RowResult, independent_seeds: tuple[int, ...]) -> dict[str, str]:
    """One table row as named cells (the same for Markdown and CSV)."""
    row, seeds = result.row, result.seeds
    cells = {"row": row.label}
    if not seeds:
        cells["test error %"] = f"not finished (seeds {', '.join(map(str, result.missing))})"
        cells["paper %"] = _pct(row.paper)
        cells["target %"] = target_text(row.target, None)
        return cells
    summary = seed_summary([s.main["mean_error_pct"] for s in seeds], PERCENT)
    spread = f" ± {summary.sd:.2f}" if summary.sd is not None else ""
    cells["test error %"] = f"{summary.mean:.2f}{spread}"
    cells["95% interval"] = "" if summary.low is None else f"[{summary.low:.2f}, {summary.high:.2f}]"
    cells["seeds"] = ", ".join(f"{s.main['mean_error_pct']:.2f} (s{s.seed})" for s in seeds) + (
        f"; not finished: {', '.join(map(str, result.missing))}" if result.missing else ""
    )
    cells["draw sd"] = mean_text([s.main["draw_sd_pct"] for s in seeds])
    cells["averaged over draws %"] = mean_text([s.main["averaged_error_pct"] for s in seeds])
    if any(s.main.get("weights_kept") is False for s in seeds):
        cells["seeds"] += " (single pass of result.json: weights not kept)"
    for test_seed in independent_seeds:
        cells[f"test seed {test_seed} %"] = mean_text([_error(s.independent[test_seed]) for s in seeds])
    cells["paper %"] = _pct(row.paper) + (f" ({row.paper_note})" if row.paper_note else "")
    cells["paper vs ours"] = "" if row.paper is None else where_paper_falls(row.paper, summary)
    cells["target %"] = target_text(row.target, summary.mean, so_far=bool(result.missing))
    cells["epochs"] = ", ".join(sorted({epochs_text(s) for s in seeds}))
    cells["train time"] = f"{np.mean([minutes(s) for s in seeds]):.1f} min{devices(seeds)}"
    return cells


def target_text(target: float | None, mean: float | None, *, so_far: bool = False) -> str:
    """'4.04: missed by 0.52' or '4.04: met, 0.10 below' (the seed mean against the row's target), with
    ' so far' where some of the row's seeds have not finished: a partial mean is no verdict yet."""
    if target is None:
        return ""
    if mean is None:
        return f"{target:.2f}"
    gap = round(mean - target, 2)
    verdict = f"missed by {gap:.2f}" if gap > 0 else f"met, {abs(gap):.2f} below"
    return f"{target:.2f}: {verdict}" + (" so far" if so_far else "")


def columns(independent_seeds: tuple[int, ...], *, targets: bool = False) -> list[str]:
    return [
        "row",
        "test error %",
        "95% interval",
        "seeds",
        "draw sd",
        "averaged over draws %",
        *[f"test seed {s} %" for s in independent_seeds],
        "paper %",
        "paper vs ours",
        *(["target %"] if targets else []),
        "epochs",
        "train time",
    ]


def markdown(
    study: Study, rows: list[RowResult], pairs: list[dict[str, str]], figures: dict[str, Path], base: Path
) -> str:
    cols = columns(
        study.evaluation.independent_test_seeds, targets=any(r.target is not None for r in study.rows)
    )
    draws = study.evaluation.draws
    lines = [f"## {study.title}", ""]
    if study.source:
        lines += [f"Source: {study.source}. Study file: `{study.path}`.", ""]
    lines += [
        f"Test error in %: for each seed the mean over {draws} evaluation draws with the policy's mean "
        "locations on the fixed test set (`data.test_seed`), then the mean ± sd over seeds and its 95% t "
        'interval (cut at 0). "draw sd": the spread over draws (mean over seeds). "averaged over draws": the '
        f"error of the predictions averaged over the {draws} draws, a different estimator. Weights: best "
        "validation epoch of the last stage.",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for result in rows:
        cells = row_cells(result, study.evaluation.independent_test_seeds)
        lines.append("| " + " | ".join(cells.get(c, "").replace("|", "/") for c in cols) + " |")
    if any(result.missing for result in rows):
        lines += [
            "",
            '"not finished": not started, training, or stopped part way; '
            f"`attention study status {study.path}` says which, how far, and the time still to train.",
        ]
    lines += budget_lines(rows)
    if pairs:
        lines += [
            "",
            "McNemar's exact test on the same test images (first evaluation draw), per pair of models "
            "(seeds A/B): the images only A got right and only B got right. Pooled over the pairs, image "
            "by image: the images A's models got right more often than B's and the reverse, with the sign "
            "test of those counts (each image counts once, however many seeds agree on it):",
            "",
            "| A | B | per seed | pooled | why |",
            "| --- | --- | --- | --- | --- |",
        ]
        for cells in pairs:
            values = [cells["A"], cells["B"], cells["result"], cells.get("pooled", ""), cells["why"]]
            lines.append("| " + " | ".join(values) + " |")
    lines += curve_lines(rows)
    for name, path in figures.items():
        lines += ["", f"![{name}]({os.path.relpath(path, base)})"]
    return "\n".join(lines) + "\n"


def curve_lines(rows: list[RowResult]) -> list[str]:
    """The table of how each finished seed's training ended."""
    table = []
    for result in rows:
        for seed in result.seeds:
            c = seed.curve
            if c.best is None:
                table.append(f"| {result.row.label} | {seed.seed} | {c.epochs} |  |  |  | {c.reading} |")
                continue
            train = "" if c.train_at_end is None else f"{c.train_at_end:.2f}"
            path = f"{c.at_three_quarters:.2f} → {c.at_nine_tenths:.2f} → {c.at_end:.2f}"
            table.append(
                f"| {result.row.label} | {seed.seed} | {c.epochs} | {c.best:.2f} (epoch {c.best_epoch}) | "
                f"{path} | {train} | {c.reading} |"
            )
    if not table:
        return []
    return [
        "",
        "How each seed's training ended (its last stage): the validation number it selected its weights by, "
        "smoothed over 5% of the epochs (at least 3), at 3/4 and 9/10 of the epochs and at the end; the last "
        "epoch's training error (sampled locations for a retina); and what that reads as "
        "(attention/report/curves.py: still improving = still falling at the end, under-trained):",
        "",
        "| row | seed | epochs | best validation % (epoch) | validation % at 3/4 → 9/10 → end "
        "| train error % at end | reading |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *table,
    ]


def csv_text(study: Study, rows: list[RowResult]) -> str:
    """The table as numbers, one line per row: what a script would read."""
    independent = study.evaluation.independent_test_seeds
    fields = ["row", "seeds_run", "seeds_missing", "mean_pct", "sd_pct", "ci95_low_pct", "ci95_high_pct"]
    fields += ["per_seed_pct", "draw_sd_pct", "averaged_over_draws_pct"]
    fields += [f"test_seed_{s}_pct" for s in independent]
    fields += ["paper_pct", "target_pct", "epochs", "train_minutes", "devices", "curve_readings"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for result in rows:
        seeds = result.seeds
        line: dict[str, Any] = {
            "row": result.row.label,
            "seeds_run": " ".join(str(s.seed) for s in seeds),
            "seeds_missing": " ".join(map(str, result.missing)),
            "paper_pct": result.row.paper,
            "target_pct": result.row.target,
        }
        if seeds:
            summary = seed_summary([s.main["mean_error_pct"] for s in seeds], PERCENT)
            line.update(
                mean_pct=summary.mean,
                sd_pct=summary.sd,
                ci95_low_pct=summary.low,
                ci95_high_pct=summary.high,
                per_seed_pct=" ".join(f"{s.main['mean_error_pct']:.4f}" for s in seeds),
                draw_sd_pct=_mean([s.main["draw_sd_pct"] for s in seeds]),
                averaged_over_draws_pct=_mean([s.main["averaged_error_pct"] for s in seeds]),
                epochs=" / ".join(epochs_text(s) for s in seeds),
                train_minutes=float(np.mean([minutes(s) for s in seeds])),
                devices=" ".join(sorted({r.get("device", "cpu") for s in seeds for r in s.results})),
                curve_readings="; ".join(f"s{s.seed}: {s.curve.reading}" for s in seeds),
            )
            for test_seed in independent:
                line[f"test_seed_{test_seed}_pct"] = _mean([_error(s.independent[test_seed]) for s in seeds])
        writer.writerow(line)
    return buffer.getvalue()


def draw_figures(study: Study, rows: list[RowResult], out_dir: Path) -> dict[str, Path]:
    """Validation curves (first finished seed of each row, stages end to end) and, where rows form a
    ``series``, error against the number of glimpses with the paper's points."""
    from attention.report.figures import plot_error_against_glimpses, save_curves, save_figure
    from attention.runs import load_run_config
    from attention.tasks import TASKS

    figures: dict[str, Path] = {}
    curves, metric = [], "val_error_pct"
    for result in rows:
        if result.seeds:
            metrics, offset = [], 0
            for stage in result.seeds[0].metrics:
                metrics += [{**m, "epoch": m["epoch"] + offset} for m in stage]
                offset += len(stage)
            curves.append((result.row.label, metrics))
            # the task's own validation number (a test error, or a catch rate)
            metric = TASKS.get(load_run_config(result.seeds[0].run_dirs[0]).data.task).selection_metric
    if curves:
        path = out_dir / "curves.png"
        save_curves(curves, metric, path)
        figures["validation error per epoch"] = path
    series = _series_points(rows)
    if series:
        path = out_dir / "glimpses.png"
        save_figure(lambda ax: plot_error_against_glimpses(ax, series), path, size=(6.0, 4.0))
        figures["test error against the number of glimpses"] = path
    return figures


def _series_points(rows: list[RowResult]) -> dict[str, list[dict[str, Any]]]:
    from attention.study import stage_config

    series: dict[str, list[dict[str, Any]]] = {}
    for result in rows:
        row = result.row
        if row.series is None:
            continue
        glimpses = stage_config(row, row.seeds[0], len(row.stages) - 1, init_from=None).model.num_glimpses
        point: dict[str, Any] = {"glimpses": glimpses, "paper": row.paper, "target": row.target}
        if result.seeds:
            summary = seed_summary([s.main["mean_error_pct"] for s in result.seeds], PERCENT)
            point.update(mean=summary.mean, low=summary.low, high=summary.high)
        series.setdefault(row.series, []).append(point)
    return series


def write_study_report(
    study_file: Path,
    *,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    out_dir: Path | None = None,
    into: Path | None = None,
    data_dir=None,
    device=None,
    smoke: bool = False,
) -> list[Path]:
    """Write ``report.md``, ``report.csv`` and the figures to ``out_dir`` (default: the study's folder), and
    with ``into`` replace the study's section of that Markdown document; ``smoke`` reports a ``--smoke`` run
    of the study (its runs in ``runs_dir``). Returns the files written."""
    from attention.runs import atomic_write_bytes

    study = load_study(study_file, smoke=smoke)
    if into is not None:  # refuse a document it cannot update before evaluating or writing anything
        if not into.is_file():
            raise AttentionError(
                f"{into} does not exist: --into updates a document that has the study's markers"
            )
        replace_section(into.read_text(), study.name, "")
    out_dir = out_dir or study_folder(study.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = evaluation_cache_dir(Path(runs_dir))
    rows = collect(study, Path(runs_dir), cache_dir=cache_dir, data_dir=data_dir, device=device)
    pairs = compare_rows(study, rows)
    figures = draw_figures(study, rows, out_dir)
    report = out_dir / "report.md"
    atomic_write_bytes(report, markdown(study, rows, pairs, figures, out_dir).encode())
    table = out_dir / "report.csv"
    atomic_write_bytes(table, csv_text(study, rows).encode())
    written = [report, table, *figures.values()]
    if into is not None:
        section = markdown(study, rows, pairs, figures, into.parent)
        atomic_write_bytes(into, replace_section(into.read_text(), study.name, section).encode())
        written.append(into)
    return written


def markers(name: str) -> tuple[str, str]:
    return f"<!-- study: {name} -->", f"<!-- end of study: {name} -->"


def replace_section(document: str, name: str, section: str) -> str:
    """``document`` with the text between the study's two marker lines replaced by ``section``; the prose
    outside the markers stays as written."""
    return replace_between(document, *markers(name), section)


def replace_between(document: str, begin: str, end: str, section: str) -> str:
    """``document`` with the text between the lines ``begin`` and ``end`` replaced by ``section``; refused
    unless each is there once, in that order."""
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise AttentionError(
            f"the document needs the lines '{begin}' and '{end}' once each, in that order, around where "
            "the table goes: add them"
        )
    head, rest = document.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}{end}{tail}"
