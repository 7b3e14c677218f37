"""A study's results, read from its runs: each row's finished seeds under the evaluation protocol, and the
declared pairs of rows tested image by image.

Each seed is the chain of its row's stages (the last holds the row's model), evaluated with the study's
draws on the fixed test set and on its independent test seeds (:mod:`attention.report.evaluation`,
cached). ``attention study report`` renders these (attention/report/study_report.py) and ``attention
study targets`` summarises them (attention/report/targets.py). Nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attention import AttentionError
from attention.report.curves import CurveReading, read_curve
from attention.report.evaluation import run_evaluation, unpack
from attention.report.stats import format_p, mcnemar_exact, pooled_sign_test
from attention.report.tables import epochs_label
from attention.runs import RESULT, read_json, read_metrics
from attention.study import Row, Study, Unit, unit_run


@dataclass
class SeedResult:
    seed: int
    run_dirs: list[Path]
    """The run of every stage, first to last; the last holds the row's model."""
    results: list[dict[str, Any]]
    main: dict[str, Any]
    """The evaluation on the fixed test set."""
    independent: dict[int, dict[str, Any]] = field(default_factory=dict)
    curve: CurveReading | None = None
    """How the last stage's training ended (read once here; the Markdown and the CSV both show it)."""
    metrics: list[list[dict[str, Any]]] = field(default_factory=list)
    """Each stage's ``metrics.jsonl``, first to last (read once; the curve reading and the figure use it)."""


@dataclass
class RowResult:
    row: Row
    seeds: list[SeedResult]
    missing: list[int]


def collect(study: Study, runs_dir: Path, *, cache_dir: Path, data_dir=None, device=None) -> list[RowResult]:
    """Every row's finished seeds, evaluated under the study's protocol (cached)."""
    rows = []
    for row in study.rows:
        found, missing = [], []
        for seed in row.seeds:
            run_dirs = [unit_run(Unit(row, seed, stage), runs_dir) for stage in range(len(row.stages))]
            if any(run is None or not (run / RESULT).is_file() for run in run_dirs):
                missing.append(seed)
                continue
            evaluate = {"draws": study.evaluation.draws, "cache_dir": cache_dir}
            last = run_dirs[-1]
            main = run_evaluation(last, test_seed=None, data_dir=data_dir, device=device, **evaluate)
            independent = {
                s: run_evaluation(last, test_seed=s, data_dir=data_dir, device=device, **evaluate)
                for s in study.evaluation.independent_test_seeds
            }
            results = [read_json(run / RESULT) for run in run_dirs]
            metrics = [read_metrics(run) for run in run_dirs]
            curve = seed_curve(last, metrics[-1])
            found.append(SeedResult(seed, run_dirs, results, main, independent, curve, metrics))
        rows.append(RowResult(row, found, missing))
    return rows


def seed_curve(last: Path, metrics: list[dict[str, Any]]) -> CurveReading:
    """How the last stage of one seed's chain (its run ``last``, whose epochs are ``metrics``) ended
    (:mod:`attention.report.curves`)."""
    from attention.runs import load_run_config
    from attention.tasks import TASKS

    task = TASKS.get(load_run_config(last).data.task)
    return read_curve(metrics, lambda row: task.selection_percent(task.epoch_selection(row)))


def epochs_text(seed: SeedResult, *, why: bool = False) -> str:
    """Epochs of each stage ('300 + 60'), with 'of N' where a stopping rule cut a stage short (and, with
    ``why``, which rule)."""
    return " + ".join(epochs_label(result, why=why) for result in seed.results)


def minutes(seed: SeedResult) -> float:
    return sum(r["train_seconds"] for r in seed.results) / 60


def devices(seeds: list[SeedResult]) -> str:
    found = sorted({r.get("device", "cpu") for s in seeds for r in s.results})
    return "" if found == ["cpu"] else f" ({', '.join(found)})"


def compare_rows(study: Study, rows: list[RowResult]) -> list[dict[str, str]]:
    """McNemar's exact test for each declared pair on the fixed test set's first draw: the same images, so
    any two finished models pair. Seeds are matched where both rows have them, else paired in order; the
    test is given per pair of models, and pooled over the pairs image by image (a sign test:
    :func:`attention.report.stats.pooled_sign_test`)."""
    by_label = {r.row.label: r for r in rows}
    out = []
    for a_label, b_label, why in study.compare:
        a, b = by_label[a_label], by_label[b_label]
        b_seeds = {s.seed: s for s in b.seeds}
        matched = [(s, b_seeds[s.seed]) for s in a.seeds if s.seed in b_seeds]
        pairs = matched or list(zip(a.seeds, b.seeds, strict=False))
        cells = {"A": a_label, "B": b_label, "why": why}
        if not pairs:
            cells["result"] = "not finished in both rows yet"
            out.append(cells)
            continue
        tests, a_bits, b_bits = [], [], []
        for a_seed, b_seed in pairs:
            n = a_seed.main["n_test"]
            if b_seed.main["n_test"] != n:
                raise AttentionError(f"rows '{a_label}' and '{b_label}' were tested on different test sets")
            if a_seed.main["first_draw_correct"] is None or b_seed.main["first_draw_correct"] is None:
                continue  # a model whose weights were not kept cannot be paired image by image
            a_ok = unpack(a_seed.main["first_draw_correct"], n)
            b_ok = unpack(b_seed.main["first_draw_correct"], n)
            name = (
                f"seed {a_seed.seed}" if a_seed.seed == b_seed.seed else f"seeds {a_seed.seed}/{b_seed.seed}"
            )
            tests.append((name, mcnemar_exact(a_ok, b_ok)))
            a_bits.append(a_ok)
            b_bits.append(b_ok)
        if not tests:
            cells["result"] = "weights not kept: no paired test"
            out.append(cells)
            continue
        pooled = pooled_sign_test(a_bits, b_bits)
        cells["result"] = "; ".join(
            f"{name}: only A right {t.only_a}, only B right {t.only_b}, {format_p(t.p_value)}"
            for name, t in tests
        )
        cells["pooled"] = (
            f"A right more often {pooled.only_a}, B {pooled.only_b}, {format_p(pooled.p_value)}"
            if len(tests) > 1
            else "one pair: as per seed"
        )
        out.append(cells)
    return out
