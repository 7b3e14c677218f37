"""A search worker that trains populations: ``attention search FILE --population K``.

It claims up to K waiting trials that can train together (they differ only in the fields a population
allows per trial, attention/population_trials.py) and trains them with :func:`fit_population`. Each trial
stays an Optuna trial of its own: its own heartbeat, its own run directory (recorded as ``run_dir``), its
validation error reported to the pruner after each of its epochs, and its own ending (a value, pruned,
failed with an error) recorded as soon as it ends, while the others go on. Everything else is the engine's
(attention/engine.py): the queue, stale trials and their retries from a checkpoint (``fit``'s format, so a
retry may run alone or in another population), Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from attention import AttentionError
from attention.build import resolve_config
from attention.engine import (
    ENDED,
    ERROR,
    KEY,
    Abandoned,
    WorkerSpec,
    claim,
    heartbeat,
    next_trial,
)
from attention.population_train import Outcome, fit_population
from attention.population_trials import population_mismatch

log = logging.getLogger(__name__)


def population_worker(spec: WorkerSpec) -> int:
    """Claim and train populations until no trial waits and none runs elsewhere (as
    :func:`attention.engine.worker`); returns how many trials this worker ran."""
    from attention.search import draws, load_search, work

    if spec.kind != "search":
        raise AttentionError("--population trains the trials of a search; a study runs its units one by one")
    searching = work(spec)
    study, storage = searching.study, searching.storage
    search = load_search(spec.file, smoke=spec.smoke)
    if spec.trials is not None:
        search = dataclasses.replace(search, trials=spec.trials)
    drawn = draws(search)

    def config_of(trial: optuna.trial.FrozenTrial) -> Any:
        draw = trial.user_attrs.get("draw")
        if not isinstance(draw, int) or not 0 <= draw < len(drawn):
            return None
        return resolve_config(search.config(drawn[draw]))

    ran = 0
    while (found := next_trial([searching])) is not None:
        first = found[1]
        claimed = [first]
        base = config_of(storage.get_trial(first._trial_id))
        if base is not None:
            while len(claimed) < spec.population:
                more = claim(
                    study,
                    storage,
                    accept=lambda t, base=base: (
                        (c := config_of(t)) is not None and population_mismatch(base, c) is None
                    ),
                )
                if more is None:
                    break
                claimed.append(more)
        run_population(study, storage, claimed, search, spec)
        ran += len(claimed)
    return ran


def run_population(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    claimed: list[optuna.Trial],
    search: Any,
    spec: WorkerSpec,
) -> None:
    """Train the claimed trials as one population and record how each ended, as it ends."""
    from attention.search import report_epoch, trial_run

    runs = [trial_run(search, trial, Path(spec.runs_dir)) for trial in claimed]
    log.warning("population of %d: trials %s", len(claimed), [t.number for t in claimed])
    ended: set[int] = set()

    def on_end(k: int, outcome: Outcome) -> None:
        ended.add(k)
        record(study, storage, claimed[k], outcome)

    with contextlib.ExitStack() as beats:
        for trial in claimed:
            beats.enter_context(heartbeat(storage, trial._trial_id, spec.heartbeat_s))
        try:
            fit_population(
                [config for config, _ in runs],
                run_dirs=[run_dir for _, run_dir in runs],
                data_dir=spec.data_dir,
                device=spec.device,
                resume=True,
                progress=spec.progress,
                on_epoch=lambda k, row, final: report_epoch(claimed[k], row, final=final),
                on_end=on_end,
            )
        except KeyboardInterrupt:
            for k, trial in enumerate(claimed):
                if k not in ended:
                    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                        storage.set_trial_user_attr(trial._trial_id, ENDED, "interrupted")
                        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            raise
        except AttentionError as error:  # the population as a whole was refused: each trial fails with why
            for k, trial in enumerate(claimed):
                if k not in ended:
                    record(study, storage, trial, error)


def record(
    study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial, outcome: Outcome
) -> None:
    """Record a trial's ending as :func:`attention.engine.run_trial` does for a trial run alone."""
    key = trial.user_attrs.get(KEY)
    if isinstance(outcome, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d (%s) pruned", trial.number, key)
    elif isinstance(outcome, Abandoned):
        log.warning("trial %d (%s) abandoned: %s", trial.number, key, outcome)
    elif isinstance(outcome, BaseException):
        # an AttentionError (a diverged loss) is kept, retried only by a later command; anything else is
        # unexpected, and the trial is failed without an error so that the engine retries it from its
        # checkpoint
        attribute, value = (
            (ERROR, str(outcome)) if isinstance(outcome, AttentionError) else (ENDED, "crashed")
        )
        if attribute == ENDED:
            log.error("trial %d (%s) crashed: %r", trial.number, key, outcome)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial._trial_id, attribute, value)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if attribute == ERROR:
            log.error("trial %d (%s) failed: %s", trial.number, key, outcome)
    else:
        try:
            study.tell(trial, float(outcome["validation_error_pct"]))
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as error:
            log.warning("trial %d (%s) finished after it was failed as stale (%s)", trial.number, key, error)
