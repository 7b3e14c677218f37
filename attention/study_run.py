"""``attention study run FILE...``: train every row x seed x stage of each study that has no result yet.

Each unit is a work item of :mod:`attention.engine` (a fixed Optuna trial); its run directory is its
configuration's identity, so a finished unit is never retrained, a committed run that matches a row counts
as done, and a stopped or crashed study continues where it was: its stopped runs first, so that what was
started ends before new runs begin. A unit that two studies share is trained by
one of them at a time (attention/runs.py: holding_run): a worker does not claim a unit whose run another
process is training, and hands back one it claimed in the instant before that process took the run; it
trains other work meanwhile (this file's or a later file's), or waits, and once the run is finished its
unit's trial takes the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from attention import AttentionError
from attention.config import Config
from attention.engine import (
    KEY,
    Item,
    Work,
    WorkerSpec,
    check_still_running,
    enqueue,
)
from attention.launch import EngineOptions, launch
from attention.runs import CHECKPOINT, DEFAULT_RUNS_DIR, RESULT, run_is_busy
from attention.storage import open_study
from attention.study import (
    Selection,
    Study,
    Unit,
    config_run_dir,
    load_study,
    stage_config,
    unit_config,
    unit_run,
)

if TYPE_CHECKING:
    from attention.train import OnEpoch

log = logging.getLogger(__name__)


def pending_items(
    study: Study, locate: Callable[[Unit], Path | None], selection: Selection | None = None
) -> list[Item]:
    """The units ``selection`` picks whose earlier stages are finished (so their config is known), as work
    items."""
    selection = selection or Selection()
    items = []
    for unit in study.units():
        if not selection.picks(unit) or locate(unit) is None:
            continue
        attrs = {"row": unit.row.label, "seed": unit.seed, "stage": unit.stage + 1}
        items.append(Item(unit.key, attrs=attrs))
    return items


def work(spec: WorkerSpec) -> Work:
    """What a worker runs for a study (see :func:`attention.engine.worker`)."""

    study = load_study(spec.file, smoke=spec.smoke)
    runs_dir = Path(spec.runs_dir)
    optuna_study, storage = open_study(spec.storage, study_name(study, spec.smoke))
    units = {unit.key: unit for unit in study.units()}
    selection = Selection(spec.rows, spec.seeds)
    # A unit's config and run directory, once known, stay fixed (a later stage's config names the finished
    # run of the stage before), so each is resolved once per process, not on every claim and poll.
    resolved: dict[str, tuple[Config, Path]] = {}

    def resolve(unit: Unit) -> tuple[Config, Path] | None:
        if unit.key not in resolved:
            config = unit_config(unit, runs_dir)
            if config is None:
                return None  # an earlier stage is unfinished: ask again at the next refill
            resolved[unit.key] = (config, config_run_dir(config, runs_dir))
        return resolved[unit.key]

    def locate(unit: Unit | None) -> Path | None:
        found = resolve(unit) if unit else None
        return found[1] if found else None

    def refill() -> None:
        items = pending_items(study, locate, selection)
        enqueue(
            optuna_study,
            items,
            done=lambda item: is_finished(locate(units[item.key])),
            errors_since=spec.started,
        )

    def plan(trial: optuna.Trial) -> tuple[Config, Path]:
        key = trial.user_attrs[KEY]
        found = resolve(units[key]) if key in units else None
        if found is None:
            raise AttentionError(f"{study.path}: no unit '{key}' is ready to run (was the file changed?)")
        config, run_dir = found
        trial.set_user_attr("run_dir", str(run_dir))
        log.warning("trial %d: %s -> %s", trial.number, key, run_dir)
        return config, run_dir

    def reporter(trial: optuna.Trial, config: Config) -> OnEpoch:
        return lambda row, final: check_still_running(trial)  # a study prunes nothing

    def config_of(trial: optuna.trial.FrozenTrial) -> Config | None:
        unit = units.get(trial.user_attrs.get(KEY))
        found = resolve(unit) if unit else None
        return found[0] if found else None

    def run_of(trial: optuna.trial.FrozenTrial) -> Path | None:
        return locate(units.get(trial.user_attrs.get(KEY)))

    def free(trial: optuna.trial.FrozenTrial) -> bool:
        """Whether no other process trains this unit's run now (a unit another study shares)."""
        run_dir = run_of(trial)
        return run_dir is None or not run_is_busy(run_dir)

    def started(trial: optuna.trial.FrozenTrial) -> bool:
        """Whether this unit's run was stopped part way (finish it before starting new runs)."""
        run_dir = run_of(trial)
        return run_dir is not None and (run_dir / CHECKPOINT).is_file()

    def wanted(trial: optuna.trial.FrozenTrial) -> bool:
        unit = units.get(trial.user_attrs.get(KEY))
        return unit is not None and selection.picks(unit)

    return Work(
        spec,
        refill,
        optuna_study,
        storage,
        plan,
        reporter,
        accept=free,
        first=started,
        wanted=wanted,
        config_of=config_of,
    )


def is_finished(run_dir: Path | None) -> bool:
    return run_dir is not None and (run_dir / RESULT).is_file()


def capped_rows(studies: list[Study], selection: Selection, runs_dir: Path) -> list[str]:
    """The rows with a picked unit still to train whose stage caps its training in seconds
    (``train.time_budget_s``): a cap that binds by the machine's speed, so by how many runs share it."""
    found: list[str] = []
    for study in studies:
        for unit in study.units():
            if unit.row.label in found or not selection.picks(unit) or is_finished(unit_run(unit, runs_dir)):
                continue
            if stage_config(unit.row, unit.seed, unit.stage).train.time_budget_s is not None:
                found.append(unit.row.label)
    return found


def cap_warning(rows: list[str], workers: int, devices: list[str]) -> str | None:
    """What to tell the user when several workers share the CPU and some rows cap training in seconds:
    each worker trains at a fraction of a lone run's speed, so the cap stops those seeds earlier than it
    stopped a seed trained alone, and the row's seeds end up with different budgets."""
    if not rows or workers < 2 or devices[0] != "cpu":
        return None
    return (
        f"{workers} workers share this CPU, and these rows cap training in seconds (train.time_budget_s), so "
        f"the cap may stop their seeds at fewer epochs than a run alone reaches: {'; '.join(rows)}. "
        "To keep their budgets, train them with --workers 1 (the report flags seeds a cap cut short)"
    )


def study_name(study: Study, smoke: bool) -> str:
    return study.name + ("-smoke" if smoke else "")


def run_study(
    paths: str | Path | list[str | Path], *, selection: Selection | None = None, **engine: Any
) -> list[dict[str, Any]]:
    """Train what each study lacks, the files in order, every worker going on to the next file when it
    can claim nothing more in the earlier ones; only the units ``selection`` picks, when it picks some.
    ``engine``: the fields of :class:`attention.launch.EngineOptions` (workers, storage, runs_dir, device,
    ...); ``smoke`` runs a tiny version in a temporary folder (unless ``storage``/``runs_dir`` say where).
    Returns a summary per file: the units picked, how many are finished, storage."""
    options = EngineOptions(**engine)
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    if len({path.resolve() for path in paths}) != len(paths):
        raise AttentionError("a study file is named twice; name each once")
    studies = [load_study(path, smoke=options.smoke) for path in paths]  # refuse a bad file before any run
    names = [study_name(study, options.smoke) for study in studies]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise AttentionError(
            f"two study files have the same name ({', '.join(twice)}), and a study's name keys its storage "
            "and folder: rename one"
        )
    selection = selection or Selection()
    selection.check(studies)
    count, devices, _ = options.layout()  # refuses a device this machine lacks before anything runs
    if not options.smoke:
        runs_dir = Path(options.runs_dir) if options.runs_dir else DEFAULT_RUNS_DIR
        warning = cap_warning(capped_rows(studies, selection, runs_dir), count, devices)
        if warning:
            log.warning(warning)
    launched = launch("study", paths, options, rows=selection.rows, seeds=selection.seeds)
    summaries = []
    for study, (spec, _) in zip(studies, launched, strict=True):
        units = [unit for unit in study.units() if selection.picks(unit)]
        done = sum(is_finished(unit_run(unit, Path(spec.runs_dir))) for unit in units)
        summaries.append(
            {
                "file": str(study.path),
                "units": len(units),
                "finished": done,
                "storage": spec.storage,
                "runs_dir": spec.runs_dir,
            }
        )
    return summaries
