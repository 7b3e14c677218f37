"""``attention search report``: a search's best trial as a recipe file, its trials as a table, and figures.

The best trial is the COMPLETE trial with the lowest validation error. Its recipe is the search's recipe
with the searched fields set to the trial's values, without the search's short budget: a file that
``attention train --config`` and a study's ``recipe`` accept. Figures come from
``optuna.visualization.matplotlib``: the optimization history, and the error against each searched field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from attention import AttentionError
from attention.engine import KEY
from attention.runs import atomic_write_bytes
from attention.search import Search, load_search
from attention.storage import default_storage, journal_path, open_storage
from attention.study import study_folder


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise AttentionError(f"cannot write {value!r} to a recipe file")


def recipe_text(overrides: dict[str, Any], header: str) -> str:
    """Flat dotted overrides as a TOML file with one table per section (None values are left out: TOML
    has no null, and a missing key means the default)."""
    sections: dict[str, list[str]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        sections.setdefault(section, []).append(f"{name} = {toml_value(value)}")
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section in sorted(sections):
        lines += ["", f"[{section}]", *sections[section]]
    return "\n".join(lines) + "\n"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise AttentionError(f"search '{study.study_name}' has no finished trial yet; run it first")
    return min(complete, key=lambda t: (t.value, t.number))


def search_task(search: Search) -> Any:
    """The task of the search's trials, which says what their objective is."""
    from attention.tasks import TASKS

    return TASKS.get(search.config({}).data.task)


def value_text(value: Any) -> str:
    """A searched value as the report shows it: numbers to 4 significant digits, a choice as it is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study: optuna.Study, search: Search, task: Any) -> str:
    keys = list(search.space)
    lines = [
        "| trial | draw | " + " | ".join(keys) + f" | state | best {task.selection_label} % | epochs | run |",
        "| --- | --- | " + " | ".join("---" for _ in keys) + " | --- | --- | --- | --- |",
    ]
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        values = " | ".join(value_text(t.params[k]) if k in t.params else "" for k in keys)
        reported = t.intermediate_values
        best = t.value if t.value is not None else (min(reported.values()) if reported else None)
        lines.append(
            f"| {t.number} | {t.user_attrs.get(KEY, '')} | {values} | {t.state.name.lower()}"
            + (f" ({t.user_attrs['ended_because']})" if "ended_because" in t.user_attrs else "")
            + f" | {'' if best is None else f'{task.selection_percent(best):.2f}'} | {len(reported)}"
            + f" | `{t.user_attrs.get('run_dir', '')}` |"
        )
    return "\n".join(lines) + "\n"


def write_search_report(
    search_file: Path,
    *,
    storage: str | None = None,
    out_dir: Path | None = None,
    recipe_out: Path | None = None,
    smoke: bool = False,
) -> list[Path]:
    from attention.report.figures import save_optuna_figure

    search = load_search(search_file, smoke=smoke)
    url = storage or default_storage(search.path)
    name = search.name + ("-smoke" if smoke else "")
    journal = journal_path(url)
    if journal is not None and not journal.is_file():  # do not leave an empty journal behind
        raise AttentionError(f"no search storage at {journal}; run 'attention search {search_file}' first")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise AttentionError(
            f"no search '{search.name}' in {url}; run 'attention search {search_file}'"
        ) from None
    out_dir = out_dir or study_folder(search.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_trial(study)
    task = search_task(search)
    objective = f"{task.selection_label} {task.selection_percent(best.value):.2f}%"
    header = (
        f"Best trial of {search.path} (trial {best.number}, {best.user_attrs.get(KEY)}): {objective} "
        f"after the search's budget {search.budget}.\n"
        f"Written by `attention search report {search.path}`; the search's recipe with the searched fields "
        "set, without its budget."
    )
    text = recipe_text({**search.recipe, **best.params}, header)
    written = []
    for path in [out_dir / "best-recipe.toml", *([recipe_out] if recipe_out else [])]:
        atomic_write_bytes(path, text.encode())
        written.append(path)
    counts = {state.name.lower(): 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    report = out_dir / "report.md"
    atomic_write_bytes(
        report,
        (
            f"## {search.title}\n\n"
            + (f"Source: {search.source}. " if search.source else "")
            + f"Search file: `{search.path}`; storage `{url}`. "
            f"Trials: {summary}. Best: trial {best.number}, "
            + ", ".join(f"{k} = {value_text(v)}" for k, v in best.params.items())
            + f", {objective}.\n\n"
            + trials_table(study, search, task)
            + "\n![optimization history](history.png)\n\n![error against each searched field](slices.png)\n"
        ).encode(),
    )
    written.append(report)
    written.append(save_optuna_figure("plot_optimization_history", study, out_dir / "history.png"))
    written.append(save_optuna_figure("plot_slice", study, out_dir / "slices.png"))
    return written
