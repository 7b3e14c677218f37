"""``attention study targets``: every study row that declares a target (``target`` in its study file), from
all the given studies, in one table: the seed mean against the target, met or missed by how much, how many
of the row's seeds it stands on, and how each seed's training ended.

It answers "where do we stand?" without reading every study's section, and it renders from the same runs
and evaluation cache as ``attention study report`` (:func:`attention.report.study_results.collect`), so it
cannot disagree with the studies' own tables. Nothing here trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attention import AttentionError
from attention.report.evaluation import evaluation_cache_dir
from attention.report.stats import PERCENT, seed_summary
from attention.report.study_report import replace_between, target_text
from attention.report.study_results import RowResult, collect, minutes
from attention.runs import DEFAULT_RUNS_DIR
from attention.study import Study, load_study
from attention.study import study_files as only_studies

MARKERS = ("<!-- targets -->", "<!-- end of targets -->")
"""The lines between which ``--into`` puts the table in a Markdown document."""

COLUMNS = (
    "table",
    "row",
    "seeds",
    "test error %",
    "other test set %",
    "target %",
    "how training ended",
    "train time",
)


def target_cells(study: Study, result: RowResult) -> dict[str, str]:
    """One row of the table, as named cells."""
    row, seeds = result.row, result.seeds
    declared = len(row.seeds)
    cells = {"table": study.title, "row": row.label, "seeds": f"{len(seeds)} of {declared}"}
    if result.missing:
        cells["seeds"] += f" (not finished: {', '.join(map(str, result.missing))})"
    if not seeds:
        cells["target %"] = target_text(row.target, None) + ": no seed finished"
        return cells
    summary = seed_summary([s.main["mean_error_pct"] for s in seeds], PERCENT)
    spread = f" ± {summary.sd:.2f}" if summary.sd is not None else ""
    cells["test error %"] = f"{summary.mean:.2f}{spread}"
    others = study.evaluation.independent_test_seeds
    if others and all(others[0] in s.independent and s.independent[others[0]] for s in seeds):
        mean = np.mean([s.independent[others[0]]["mean_error_pct"] for s in seeds])
        cells["other test set %"] = f"{mean:.2f} (test seed {others[0]})"
    cells["target %"] = target_text(row.target, summary.mean, so_far=bool(result.missing))
    cells["how training ended"] = "; ".join(f"s{s.seed} {s.curve.reading}" for s in seeds if s.curve)
    cells["train time"] = f"{np.mean([minutes(s) for s in seeds]):.0f} min a seed"
    return cells


def targets_markdown(studies: list[tuple[Study, list[RowResult]]]) -> str:
    """The table of every row with a target, in the order of the studies and their rows."""
    # a row that two studies share (the same runs under the same target) is one line naming both tables
    entries: dict[tuple, dict[str, str]] = {}
    for study, rows in studies:
        for result in rows:
            if result.row.target is None:
                continue
            runs = tuple(str(seed.run_dirs[-1]) for seed in result.seeds)
            key = (runs, tuple(result.missing), result.row.target) if runs else (study.path, result.row.label)
            if key in entries:
                entries[key]["table"] += f"; {study.title}"
            else:
                entries[key] = target_cells(study, result)
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
        *(
            "| " + " | ".join(cells.get(c, "").replace("|", "/") for c in COLUMNS) + " |"
            for cells in entries.values()
        ),
    ]
    if not entries:
        names = ", ".join(str(study.path) for study, _ in studies)
        raise AttentionError(f"no row of {names} declares a target: add 'target = <error %>' to the rows")
    intro = (
        "Every study row that declares a target (`target` in its study file). Test error: the mean over "
        "the row's finished seeds of each seed's mean over its evaluation draws, ± the sd over seeds; "
        '"so far" where some of its seeds have not finished. How training ended: the reading of each '
        "seed's validation curve (attention/report/curves.py), which says whether more epochs of the same "
        "recipe are likely to help."
    )
    return intro + "\n\n" + "\n".join(lines) + "\n"


def write_targets(
    paths: list[Path],
    *,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    into: Path | None = None,
    data_dir=None,
    device=None,
) -> str:
    """The table of :func:`targets_markdown` for the studies in ``paths`` (searches passed over); with
    ``into``, also put it between the :data:`MARKERS` of that Markdown document (refused before anything is
    evaluated when it lacks them)."""
    from attention.runs import atomic_write_bytes

    if into is not None:
        if not into.is_file():
            raise AttentionError(f"{into} does not exist: --into updates a document that has the markers")
        replace_between(into.read_text(), *MARKERS, "")
    studies = [load_study(path) for path in only_studies(paths)]
    cache_dir = evaluation_cache_dir(Path(runs_dir))
    collected = [
        (study, collect(study, Path(runs_dir), cache_dir=cache_dir, data_dir=data_dir, device=device))
        for study in studies
    ]
    table = targets_markdown(collected)
    if into is not None:
        atomic_write_bytes(into, replace_between(into.read_text(), *MARKERS, table).encode())
    return table
