"""``attention study run``: train every row x seed x stage of a study that has no result yet.

Each unit is a work item of :mod:`attention.engine` (a fixed Optuna trial); its run directory is its
configuration's identity, so a finished unit is never retrained, a committed run that matches a row counts
as done, and a stopped or crashed study continues where it was. A unit that two studies share is trained by
one of them at a time: the other's worker waits for the run (attention/runs.py: holding_run) and takes its
result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna

from attention import AttentionError
from attention.engine import (
    KEY,
    Item,
    WorkerSpec,
    check_still_running,
    enqueue,
    launch,
    open_study,
)
from attention.runs import RESULT
from attention.study import Study, Unit, load_study, unit_config, unit_run

log = logging.getLogger(__name__)


def pending_items(study: Study, runs_dir: Path) -> tuple[list[Item], dict[str, Unit]]:
    """The units whose earlier stages are finished (so their config is known), as work items."""
    items, units = [], {}
    for unit in study.units():
        if unit_run(unit, runs_dir) is None:
            continue
        units[unit.key] = unit
        attrs = {"row": unit.row.label, "seed": unit.seed, "stage": unit.stage + 1}
        items.append(Item(unit.key, attrs=attrs))
    return items, units


def work(spec: WorkerSpec) -> tuple[Any, Any, Any]:
    """What a worker runs for a study (see :func:`attention.engine.worker`)."""
    from attention.tasks import TASKS
    from attention.train import fit

    study = load_study(spec.file, smoke=spec.smoke)
    runs_dir = Path(spec.runs_dir)
    optuna_study, storage = open_study(spec.storage, study_name(study, spec.smoke))
    units: dict[str, Unit] = {}

    def refill() -> None:
        items, found = pending_items(study, runs_dir)
        units.update(found)
        enqueue(optuna_study, items, done=lambda item: finished(units[item.key], runs_dir))

    def execute(trial: optuna.Trial) -> float:
        key = trial.user_attrs[KEY]
        if key not in units:
            refill()
        unit = units.get(key)
        config = unit_config(unit, runs_dir) if unit else None
        if config is None:
            raise AttentionError(f"{study.path}: no unit '{key}' is ready to run (was the file changed?)")
        run_dir = unit_run(unit, runs_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        log.warning("trial %d: %s -> %s", trial.number, key, run_dir)
        result = fit(
            config,
            run_dir=run_dir,
            data_dir=spec.data_dir,
            device=spec.device,
            resume=True,
            progress=spec.progress,
            on_epoch=lambda row, final: check_still_running(trial),
            wait_if_busy=True,  # a unit another study shares, trained there now: its result, once done
        )
        return TASKS.get(config.data.task).result_selection(result)  # lower is better, whatever the task

    return execute, refill, (optuna_study, storage)


def finished(unit: Unit, runs_dir: Path) -> bool:
    run = unit_run(unit, runs_dir)
    return run is not None and (run / RESULT).is_file()


def study_name(study: Study, smoke: bool) -> str:
    return study.name + ("-smoke" if smoke else "")


def run_study(
    path: str | Path,
    *,
    workers: int | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "results/runs",
    data_dir: str | Path | None = None,
    device: str = "auto",
    smoke: bool = False,
    progress: bool = True,
    heartbeat_s: float = 30.0,
    stale_after_s: float = 300.0,
) -> dict[str, Any]:
    """Train what a study still lacks. ``smoke`` runs a tiny version in a temporary folder (unless
    ``storage``/``runs_dir`` say where). Returns a summary: units finished, and the storage used."""
    path = Path(path)
    study = load_study(path, smoke=smoke)  # refuses a malformed file before anything runs
    spec, _ = launch(
        "study",
        path,
        workers=workers,
        storage=storage,
        runs_dir=runs_dir,
        data_dir=data_dir,
        device=device,
        smoke=smoke,
        progress=progress,
        heartbeat_s=heartbeat_s,
        stale_after_s=stale_after_s,
    )
    units = study.units()
    done = sum(finished(unit, Path(spec.runs_dir)) for unit in units)
    return {"units": len(units), "finished": done, "storage": spec.storage, "runs_dir": spec.runs_dir}
