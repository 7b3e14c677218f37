"""``attention study status``: what a study has and still lacks, unit by unit, read from its run
directories without training or evaluating anything (a study of many 2-hour runs is followed for days).

A unit is *finished* (its run has a result), *training* (a process holds its run: attention/runs.py,
holding_run), *stopped* (a checkpoint and no result: the next ``attention study run`` continues it), *not
started*, *waiting* for an earlier stage of its row, or *failed* (its last trial in the study's storage
ended with an error, shown: the next ``attention study run`` retries it). The time still needed is each
started run's epochs left at its own last epoch's pace, and for a run not started its row's pace so far
(any seed): an estimate of one worker's time, shown only where a pace is known.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attention.runs import CHECKPOINT, METRICS, RESULT, read_json, read_metrics, run_is_busy
from attention.study import Study, Unit, config_run_dir, unit_config

FINISHED, TRAINING, STOPPED, NOT_STARTED, WAITING, FAILED = (
    "finished",
    "training",
    "stopped",
    "not started",
    "waiting",
    "failed",
)


@dataclass(frozen=True)
class UnitStatus:
    unit: Unit
    state: str
    run_dir: Path | None
    epochs_done: int = 0
    epochs: int | None = None
    """The unit's epoch budget (None while an earlier stage is unfinished: its config is not known)."""
    best_pct: float | None = None
    """Best validation number so far (the task's selection, in %; lower is better)."""
    seconds: float = 0.0
    """Training time so far."""
    seconds_per_epoch: float | None = None
    """The run's last epoch's time (its pace now), or its mean for a finished run."""
    last_written_s: float | None = None
    """Seconds since its metrics were last written (a stopped or training run)."""
    time_budget_s: float | None = None
    """The run's ``train.time_budget_s``, if it has one."""
    error: str | None = None
    """Why its last trial failed (a failed unit)."""


def unit_status(unit: Unit, runs_dir: Path) -> UnitStatus:
    from attention.tasks import TASKS

    config = unit_config(unit, runs_dir)
    if config is None:
        return UnitStatus(unit, WAITING, None)
    run = config_run_dir(config, runs_dir)  # not unit_run: it would resolve the config a second time
    task = TASKS.get(config.data.task)
    epochs = task(config, data_dir=None, device=torch.device("cpu")).num_epochs
    budget = config.train.time_budget_s
    if run is not None and (run / RESULT).is_file():
        result = read_json(run / RESULT)
        done, seconds = int(result.get("epochs_run", epochs)), float(result.get("train_seconds", 0.0))
        return UnitStatus(
            unit,
            FINISHED,
            run,
            epochs_done=done,
            epochs=epochs,
            best_pct=task.selection_percent(task.result_selection(result)),
            seconds=seconds,
            seconds_per_epoch=seconds / done if done else None,
        )
    rows = read_metrics(run) if run is not None else []
    if run is None or not (run / CHECKPOINT).is_file() or not rows:
        state = TRAINING if run is not None and run_is_busy(run) else NOT_STARTED
        return UnitStatus(unit, state, run, epochs=epochs, time_budget_s=budget)
    return UnitStatus(
        unit,
        TRAINING if run_is_busy(run) else STOPPED,
        run,
        epochs_done=int(rows[-1]["epoch"]),
        epochs=epochs,
        best_pct=min(task.selection_percent(task.epoch_selection(row)) for row in rows),
        seconds=float(rows[-1].get("elapsed_seconds", sum(row["seconds"] for row in rows))),
        seconds_per_epoch=float(rows[-1]["seconds"]),
        last_written_s=time.time() - (run / METRICS).stat().st_mtime,
        time_budget_s=budget,
    )


def study_status(study: Study, runs_dir: Path, errors: dict[str, str] | None = None) -> list[UnitStatus]:
    """Every unit's status; ``errors`` (unit key: error, from the study's storage: :func:`stored_errors`)
    marks the units whose last trial failed and that no process trains now."""
    statuses = [unit_status(unit, Path(runs_dir)) for unit in study.units()]
    errors = errors or {}
    return [
        dataclasses.replace(s, state=FAILED, error=errors[s.unit.key])
        if s.unit.key in errors and s.state in (STOPPED, NOT_STARTED)
        else s
        for s in statuses
    ]


def stored_errors(study: Study, storage: str | None) -> dict[str, str]:
    """The errors of the study's failed units in ``storage`` (default: its own journal), or none when the
    storage does not exist yet (nothing has run) or holds no such study."""
    import optuna

    from attention.engine import failed_items
    from attention.storage import default_storage, journal_path, open_storage
    from attention.study_run import study_name

    url = storage or default_storage(study.path)
    journal = journal_path(url)
    if journal is not None and not journal.is_file():
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        stored = optuna.load_study(study_name=study_name(study, False), storage=open_storage(url))
    except KeyError:  # no such study in the storage: nothing ran
        return {}
    finally:
        optuna.logging.set_verbosity(verbosity)
    return failed_items(stored)


def seconds_left(statuses: list[UnitStatus]) -> tuple[float, int, int]:
    """(one worker's seconds to finish every unfinished run whose pace is known, runs with no pace yet,
    units waiting for an earlier stage). ``statuses`` may come from several studies: a run they share is
    counted once, and a row's pace is its own study's."""
    paces: dict[tuple[int, int], list[float]] = {}
    for status in statuses:
        if status.seconds_per_epoch is not None:
            paces.setdefault(_row_stage(status), []).append(status.seconds_per_epoch)
    total, unknown, waiting = 0.0, 0, 0
    counted: set[Path] = set()
    for status in statuses:
        if status.state == WAITING:
            waiting += 1
            continue
        if status.state == FINISHED or status.run_dir in counted:
            continue
        counted.add(status.run_dir)  # type: ignore[arg-type]
        pace = status.seconds_per_epoch
        if pace is None and _row_stage(status) in paces:
            pace = statistics.median(paces[_row_stage(status)])
        if pace is None or status.epochs is None:
            unknown += 1
            continue
        left = pace * (status.epochs - status.epochs_done)
        if status.time_budget_s is not None:
            left = max(0.0, min(left, status.time_budget_s - status.seconds))
        total += left
    return total, unknown, waiting


def _row_stage(status: UnitStatus) -> tuple[int, int]:
    return id(status.unit.row), status.unit.stage  # the row object: two studies may use the same label


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_lines(study: Study, statuses: list[UnitStatus]) -> list[str]:
    """The table ``attention study status`` prints, and its summary."""
    header = ("row", "seed", "stage", "state", "epochs", "best val %", "time", "run")
    table: list[tuple[str, ...]] = [header]
    for s in statuses:
        state = s.state
        if s.last_written_s is not None:
            state += f" ({_duration(s.last_written_s)} ago)"
        table.append(
            (
                s.unit.row.label,
                str(s.unit.seed),
                f"{s.unit.stage + 1}/{len(s.unit.row.stages)}",
                state,
                "" if s.epochs is None else f"{s.epochs_done}/{s.epochs}",
                "" if s.best_pct is None else f"{s.best_pct:.2f}",
                _duration(s.seconds) if s.seconds else "",
                "" if s.run_dir is None else s.run_dir.name,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    told = ", ".join(
        f"{counts[state]} {state}"
        for state in (TRAINING, STOPPED, FAILED, NOT_STARTED, WAITING)
        if state in counts
    )
    lines.append("")
    lines.append(
        f"{study.path}: {counts.get(FINISHED, 0)} of {len(statuses)} units finished"
        + (f"; {told}" if told else "")
    )
    failed = [s for s in statuses if s.state == FAILED]
    if failed:
        lines.append("failed (the next `attention study run` retries them, once the cause is fixed):")
        lines += [f"  {s.unit.key}: {s.error}" for s in failed]
    lines += time_left_lines(statuses)
    return lines


def time_left_lines(statuses: list[UnitStatus], heading: str = "still to train") -> list[str]:
    """The estimate of :func:`seconds_left` in words (nothing when all is finished)."""
    left, unknown, waiting = seconds_left(statuses)
    if not (left or unknown or waiting):
        return []
    known = (
        f"about {_duration(left)} of one worker at each row's pace so far" if left else "no pace known yet"
    )
    more = [f"{_count(unknown, 'run')} with no pace yet"] if unknown else []
    more += [f"{_count(waiting, 'unit')} waiting for an earlier stage"] if waiting else []
    return [f"{heading}: {known}" + (f" (and {', '.join(more)})" if more else "")]


def summary_dict(status: UnitStatus) -> dict[str, Any]:
    """One unit's status as JSON-ready values (``--json``)."""
    return {
        "row": status.unit.row.label,
        "seed": status.unit.seed,
        "stage": status.unit.stage + 1,
        "state": status.state,
        "epochs_done": status.epochs_done,
        "epochs": status.epochs,
        "best_validation_pct": status.best_pct,
        "seconds": status.seconds,
        "seconds_per_epoch": status.seconds_per_epoch,
        "run_dir": None if status.run_dir is None else str(status.run_dir),
        "error": status.error,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
