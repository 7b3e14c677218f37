"""A worker that trains populations: ``attention search FILE --population K`` and ``attention study run
FILE --population K``.

It claims up to K waiting trials that can train together (they differ only in the fields a population
allows per trial, attention/population_trials.py: a search's draws of the learning rate and std, a study's
seeds of one row and stage) and trains them with :func:`fit_population`. A trial that cannot train in a
population (a baseline, another optimizer, a compiled model), or that finds no partner, trains alone as
any worker's would. Each trial stays an Optuna trial of its own: its own heartbeat, its own run directory
(recorded as ``run_dir``), its epochs reported as its work says (a search's pruner), and its own ending (a
value, pruned, failed with an error) recorded as soon as it ends, while the others go on. Everything else
is the engine's (attention/engine.py): the queue, stale trials and their retries from a checkpoint
(``fit``'s format, so a retry may run alone or in another population), Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging

import optuna
from optuna.trial import TrialState

from attention import AttentionError
from attention.config import config_hash
from attention.engine import (
    ENDED,
    ERROR,
    KEY,
    Abandoned,
    Work,
    claim,
    fail_trial,
    heartbeat,
    next_trial,
    run_trial,
)
from attention.population_train import Outcome, fit_population
from attention.population_trials import population_mismatch, population_refusal
from attention.runs import RunBusy
from attention.tasks import TASKS

log = logging.getLogger(__name__)


def population_worker(works: list[Work]) -> int:
    """Claim and train populations until no trial waits and none runs elsewhere (as
    :func:`attention.engine.worker`, the files in order); returns how many trials this worker ran."""
    ran = 0
    while (found := next_trial(works)) is not None:
        work, first = found
        claimed = [first]
        try:
            add_partners(work, claimed)
        except KeyboardInterrupt:  # while claiming: what it took is retried by the next start
            interrupted(work.storage, claimed)
            raise
        if len(claimed) == 1:  # nothing to train it with: alone, exactly as without --population
            run_trial(work.study, work.storage, first, work.execute, work.spec.heartbeat_s)
        else:
            run_population(work, claimed)
        ran += len(claimed)
    return ran


def add_partners(work: Work, claimed: list[optuna.Trial]) -> None:
    """Claim up to ``population - 1`` more waiting trials of ``work`` that can train with ``claimed[0]``,
    each put in ``claimed`` as soon as it is taken (so an interruption leaves none unaccounted for)."""
    config_of = work.config_of
    assert config_of is not None, "a work that trains populations says each trial's config"
    base = config_of(work.storage.get_trial(claimed[0]._trial_id))
    if base is None or population_refusal(base) is not None:
        return

    # two items with one config (a search's repeated categorical draw) share a run directory: never train
    # it twice in one population, where the second would wait forever for the first's hold on it
    runs = {config_hash(base)}

    def fits(trial: optuna.trial.FrozenTrial) -> bool:
        config = config_of(trial) if work.claimable(trial) else None
        return (
            config is not None
            and population_mismatch(base, config) is None
            and config_hash(config) not in runs
        )

    while len(claimed) < work.spec.population:
        trial = claim(work.study, work.storage, fits, work.first)
        if trial is None:
            break
        claimed.append(trial)
        config = config_of(work.storage.get_trial(trial._trial_id))
        assert config is not None  # ``fits`` took it
        runs.add(config_hash(config))


def run_population(work: Work, claimed: list[optuna.Trial]) -> None:
    """Train the claimed trials as one population and record how each ended, as it ends."""
    plan, reporter = work.plan, work.reporter
    study, storage, spec = work.study, work.storage, work.spec
    log.warning("population of %d: trials %s", len(claimed), [t.number for t in claimed])
    ended: set[int] = set()

    def on_end(k: int, outcome: Outcome) -> None:
        ended.add(k)
        record(study, storage, claimed[k], outcome)

    with contextlib.ExitStack() as beats:
        for trial in claimed:
            beats.enter_context(heartbeat(storage, trial._trial_id, spec.heartbeat_s))
        try:
            runs = [plan(trial) for trial in claimed]
            reporters = [reporter(trial, config) for trial, (config, _) in zip(claimed, runs, strict=True)]
            fit_population(
                [config for config, _ in runs],
                run_dirs=[run_dir for _, run_dir in runs],
                data_dir=spec.data_dir,
                device=spec.device,
                resume=True,
                progress=spec.progress,
                on_epoch=lambda k, row, final: reporters[k](row, final),
                on_end=on_end,
                wait_if_busy=work.wait_if_busy,
            )
        except KeyboardInterrupt:
            interrupted(storage, [trial for k, trial in enumerate(claimed) if k not in ended])
            raise
        except AttentionError as error:  # the population as a whole was refused: each trial fails with why
            for k, trial in enumerate(claimed):
                if k not in ended:
                    record(study, storage, trial, error)


def interrupted(storage: optuna.storages.BaseStorage, trials: list[optuna.Trial]) -> None:
    """Fail claimed trials as interrupted (Ctrl-C), so the next start retries them from their checkpoints."""
    for trial in trials:
        fail_trial(storage, trial, ENDED, "interrupted")


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
    elif isinstance(outcome, RunBusy):  # as engine.run_trial's HandBack: retried when its run is free
        fail_trial(storage, trial, ENDED, "handed back")
        log.warning("trial %d (%s) handed back: %s", trial.number, key, outcome)
    elif isinstance(outcome, BaseException):
        # an AttentionError (a diverged loss) is kept, retried only by a later command; anything else is
        # unexpected, and the trial is failed without an error so that the engine retries it from its
        # checkpoint
        attribute, value = (
            (ERROR, str(outcome)) if isinstance(outcome, AttentionError) else (ENDED, "crashed")
        )
        if attribute == ENDED:
            log.error("trial %d (%s) crashed: %r", trial.number, key, outcome)
        fail_trial(storage, trial, attribute, value)
        if attribute == ERROR:
            log.error("trial %d (%s) failed: %s", trial.number, key, outcome)
    else:
        try:
            study.tell(trial, TASKS.get(outcome["data"]["task"]).result_selection(outcome))
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as error:
            log.warning("trial %d (%s) finished after it was failed as stale (%s)", trial.number, key, error)
