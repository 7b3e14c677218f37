"""The one engine under studies and searches: work items as Optuna trials in a shared storage.

A study's row x seed x stage runs and a search's drawn trials are *work items*, each with a key. They are
enqueued as WAITING trials (once: an item that is waiting, running or done is not enqueued again, nor one
that failed with an error since this command started, so a deterministic error does not loop; the next
start retries it, after its cause was fixed; a study unit counts as done by its run's result, so a row whose
recipe changed is trained again), and worker processes on any machine claim them one at a time
(WAITING -> RUNNING is atomic in the storage, so two workers never take the same trial). Nothing else
decides what runs, so the same file scales from one process to many machines sharing a PostgreSQL server.

Faults. A running trial writes a heartbeat (a user attribute, every ``heartbeat_s``) from a side thread. A
worker that finds a RUNNING trial whose heartbeat is older than ``stale_after_s`` (its worker was killed)
marks it FAIL as stale; the item is then enqueued again with the same configuration and seed, and the retry
continues from the dead trial's last epoch checkpoint, because a run's directory is its configuration's
identity. This works the same on every storage (Optuna's own heartbeat exists only on its RDB storages).
Ctrl-C fails the running trial as interrupted, so the next start retries it from its checkpoint.

The storage (a journal file on one machine, PostgreSQL for many) and its lock are attention/storage.py;
starting a command's worker processes is attention/launch.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from attention import AttentionError
from attention.storage import storage_lock

if TYPE_CHECKING:
    from attention.config import Config
    from attention.train import OnEpoch

log = logging.getLogger(__name__)

KEY = "item"
"""User attribute of a trial: the key of the work item it runs."""
HEARTBEAT = "heartbeat"
ERROR = "error"
"""User attribute of a trial that failed with an error (retried only by a later start)."""
ENDED = "ended_because"
"""User attribute of a trial failed by the engine: 'stale', 'interrupted' or 'handed back' (retried)."""
HEARTBEAT_S = 30.0
"""Default seconds between a running trial's heartbeats."""
STALE_AFTER_S = 300.0
"""Default seconds without a heartbeat before another worker fails a RUNNING trial as stale."""


@dataclass(frozen=True)
class Item:
    """A unit of work: ``key`` names it; ``params`` are fixed Optuna parameters (a search's draw),
    ``attrs`` more user attributes recorded on its trial."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- queue


def _accounted(trial: optuna.trial.FrozenTrial, errors_since: float | None) -> bool:
    """Whether a trial's item needs no new trial: waiting, running, done, or failed with an error at or
    after ``errors_since`` (the start of this command: an error before it is retried)."""
    if trial.state == TrialState.FAIL:
        return ERROR in trial.user_attrs and not _failed_before(trial, errors_since)
    return True


def _failed_before(trial: optuna.trial.FrozenTrial, since: float | None) -> bool:
    ended = trial.datetime_complete
    return since is not None and ended is not None and ended.timestamp() < since


def enqueue(
    study: optuna.Study,
    items: list[Item],
    *,
    done: Callable[[Item], bool] | None = None,
    errors_since: float | None = None,
) -> int:
    """Enqueue each item that no trial accounts for and that is not already ``done``; an item whose trial
    failed with an error before ``errors_since`` is enqueued again (None: never). Where ``done`` can be
    asked, a completed trial no longer accounts for an item that is not done: it trained something else
    under the same key (a study row whose recipe changed, or whose run was deleted), so the item is trained
    again. Call under :func:`storage_lock`. Returns how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    accounted = {
        t.user_attrs.get(KEY)
        for t in trials
        if _accounted(t, errors_since) and (done is None or t.state != TrialState.COMPLETE)
    }
    count = 0
    for item in items:
        if item.key in accounted or (done is not None and done(item)):
            continue
        study.enqueue_trial(item.params, user_attrs={KEY: item.key, **item.attrs})
        accounted.add(item.key)
        count += 1
    return count


def reap_stale(study: optuna.Study, storage: optuna.storages.BaseStorage, stale_after_s: float) -> list[int]:
    """Fail the RUNNING trials whose heartbeat is older than ``stale_after_s``; call under the lock.
    Returns their numbers (their items are enqueued again by the next :func:`enqueue`)."""
    now = time.time()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.user_attrs.get(HEARTBEAT)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        if beat is not None and now - beat > stale_after_s:
            try:
                storage.set_trial_user_attr(trial._trial_id, ENDED, "stale")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished after all
            log.warning(
                "trial %d (%s) went stale; it will be retried", trial.number, trial.user_attrs.get(KEY)
            )
            reaped.append(trial.number)
    return reaped


def claim(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    accept: Callable[[optuna.trial.FrozenTrial], bool] | None = None,
    first: Callable[[optuna.trial.FrozenTrial], bool] | None = None,
) -> optuna.Trial | None:
    """Take one WAITING trial (atomically: another worker may take it first), or None if none waits;
    with ``accept``, only a trial it accepts (a population takes only trials it can train together); with
    ``first``, the trials it picks before the others, each group in queue order."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if first is not None:
        waiting = sorted(waiting, key=lambda trial: not first(trial))  # stable: queue order within
    for trial in waiting:
        if accept is not None and not accept(trial):
            continue
        try:
            taken = storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker claimed and already ended it since ``waiting`` was read (a unit handed back
            # at once ends within milliseconds): Optuna raises here instead of returning False
            continue
        if taken:
            storage.set_trial_user_attr(trial._trial_id, HEARTBEAT, time.time())
            return optuna.Trial(study, trial._trial_id)
    return None


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int, every_s: float) -> Iterator[None]:
    """Record that the trial is alive every ``every_s`` seconds while the body runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # reaped meanwhile: its result will not count
            except Exception:  # a storage hiccup must not kill the training thread
                log.exception("heartbeat of trial %d failed", trial_id)

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class HandBack(Exception):
    """Another process does this trial's work now (it trains the same run): end the trial so that the next
    :func:`enqueue` queues its item again, to be claimed once that work is done (unless that work has
    finished the item by then: where ``done`` says so, it is not queued at all)."""


class Abandoned(Exception):
    """The trial was failed as stale while its worker still ran it (its retry owns the run now)."""


def failed_items(study: optuna.Study, since: float | None = None) -> dict[str, str]:
    """The error of each of ``study``'s items whose trial failed with an error (at or after ``since``, if
    given) and that no later trial of the same item has finished since (an earlier finished trial does not
    count: a study unit is tried again when its recipe changes, see :func:`enqueue`)."""
    trials = study.get_trials(deepcopy=False)
    last_good: dict[Any, int] = {}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            key = t.user_attrs.get(KEY)
            last_good[key] = max(last_good.get(key, -1), t.number)
    return {
        t.user_attrs.get(KEY): t.user_attrs[ERROR]
        for t in trials
        if t.state == TrialState.FAIL
        and ERROR in t.user_attrs
        and not _failed_before(t, since)
        and last_good.get(t.user_attrs.get(KEY), -1) < t.number
    }


def check_still_running(trial: optuna.Trial) -> None:
    """Raise :class:`Abandoned` if ``trial`` is no longer RUNNING in the storage; called after each epoch,
    so a worker that was wrongly thought dead stops writing to a run directory its retry now owns."""
    state = trial.study._storage.get_trial(trial._trial_id).state
    if state != TrialState.RUNNING:
        raise Abandoned(f"trial {trial.number} is {state.name} in the storage")


# ------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to rebuild its work from files (it is started with ``spawn``)."""

    kind: str
    """``study`` or ``search``: which module's ``execute`` runs a claimed trial."""
    file: str
    storage: str
    runs_dir: str
    data_dir: str | None
    device: str
    threads: int
    smoke: bool = False
    progress: bool = False
    trials: int | None = None
    """A search's cap on its trials, instead of the file's count."""
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    poll_s: float = 5.0
    population: int = 1
    """Up to this many trials trained together by each worker, as one population (attention/population.py):
    a search's draws, or a study's seeds of one row and stage."""
    rows: tuple[str, ...] = ()
    """A study run limited to the rows whose label contains one of these (attention/study.py: Selection)."""
    seeds: tuple[int, ...] = ()
    """A study run limited to these seeds."""
    started: float | None = None
    """When the command started (``time.time()``): items that failed with an error before it are retried,
    those that fail after it are not (they would fail again), and are reported at its end."""

    def train(self, config: Config, run_dir: Path, on_epoch: OnEpoch, **more: Any) -> dict[str, Any]:
        """Train one claimed trial's run as every worker does: resumably (a retried trial goes on from its
        checkpoint), with this worker's data folder, device and progress bar. ``more``: other ``fit``
        options."""
        from attention.train import fit  # heavy; imported where a worker trains, not where work is planned

        return fit(
            config,
            run_dir=run_dir,
            data_dir=self.data_dir,
            device=self.device,
            resume=True,
            progress=self.progress,
            on_epoch=on_epoch,
            **more,
        )


@dataclass
class Work:
    """One study or search file's work, as a worker process holds it."""

    spec: WorkerSpec
    refill: Callable[[], None]
    """Enqueue what is pending (called under :func:`storage_lock`)."""
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    plan: Callable[[optuna.Trial], tuple[Config, Path]]
    """A claimed trial's config and run directory, recorded on the trial (``run_dir``): what
    :meth:`execute` trains, and what a population trains for it."""
    reporter: Callable[[optuna.Trial, Config], OnEpoch]
    """What a claimed trial's epochs are reported to (a search's pruner; for both, the check that it was
    not failed as stale meanwhile)."""
    accept: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which waiting trials this worker may claim now (a study skips a unit whose run another process is
    training: it would only wait for it)."""
    first: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which waiting trials to claim before the others (a study's stopped runs: finish what was started)."""
    wanted: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which of the file's trials this command works on at all (a study run limited to some rows or
    seeds); None: every one. The others are neither claimed nor waited for."""
    config_of: Callable[[optuna.trial.FrozenTrial], Config | None] | None = None
    """A waiting trial's resolved config, without claiming it (None where it is not known yet): which
    trials can train together as one population."""
    wait_if_busy: bool = False
    """Whether a claimed trial whose run another process trains waits for it (a search: the retry of a
    trial wrongly thought stale, whose first worker stops after its epoch) or is handed back (a study: a
    unit another study shares, trained there; its worker trains something else meanwhile)."""

    def execute(self, trial: optuna.Trial) -> float:
        """Train a claimed trial alone (its :attr:`plan`, reported to its :attr:`reporter`); returns its
        value, lower is better whatever the task. A run another process trains is handed back
        (:class:`HandBack`) unless :attr:`wait_if_busy`."""
        from attention.runs import RunBusy
        from attention.tasks import TASKS

        config, run_dir = self.plan(trial)
        try:
            result = self.spec.train(
                config, run_dir, self.reporter(trial, config), wait_if_busy=self.wait_if_busy
            )
        except RunBusy as busy:  # a unit another study shares, taken there as this worker got ready
            raise HandBack(str(busy)) from None
        return TASKS.get(config.data.task).result_selection(result)

    def claimable(self, trial: optuna.trial.FrozenTrial) -> bool:
        return (self.wanted is None or self.wanted(trial)) and (self.accept is None or self.accept(trial))

    def active(self) -> bool:
        """Whether a trial this command works on waits or runs (it may need this worker yet)."""
        states = (TrialState.RUNNING, TrialState.WAITING)
        trials = self.study.get_trials(deepcopy=False, states=states)
        return any(self.wanted is None or self.wanted(trial) for trial in trials)


def work_of(spec: WorkerSpec) -> Work:
    """The work of a ``spec``, built by the module of its kind."""
    if spec.kind == "study":
        from attention.study_run import work
    elif spec.kind == "search":
        from attention.search import work
    else:  # pragma: no cover
        raise AttentionError(f"unknown work kind '{spec.kind}'")
    return work(spec)


def worker(*specs: WorkerSpec) -> int:
    """Claim and run trials until none waits and none runs elsewhere; returns how many this worker ran.

    With several specs (``attention study run A B``) the worker takes a trial of the first file that has
    one it can claim, so it goes on to B while A's last units train elsewhere, and comes back to A for a
    retry. Waiting for trials that run elsewhere lets a surviving worker reap and retry one whose worker
    died, so every file still reaches its trial count."""
    import torch

    first = specs[0]
    if first.device == "cpu" or not first.device.startswith("cuda"):
        torch.set_num_threads(first.threads)
    works = [work_of(spec) for spec in specs]
    if first.population > 1:
        from attention.population_work import population_worker

        return population_worker(works)
    ran = 0
    while (found := next_trial(works)) is not None:
        work, trial = found
        run_trial(work.study, work.storage, trial, work.execute, work.spec.heartbeat_s)
        ran += 1
    return ran


def next_trial(works: list[Work]) -> tuple[Work, optuna.Trial] | None:
    """The next trial this worker claims, from the first of ``works`` that has one it accepts, after
    reaping stale trials and enqueueing what is pending. While nothing it can claim waits but trials run
    (or wait) it waits for them: their worker may die and need a retry, a skipped run may come free. None
    when nothing waits and nothing runs in any of them."""
    while True:
        for work in works:
            with storage_lock(work.spec.storage, work.storage):
                reap_stale(work.study, work.storage, work.spec.stale_after_s)
                work.refill()
            trial = claim(work.study, work.storage, work.claimable, work.first)
            if trial is not None:
                return work, trial
        if not any(work.active() for work in works):
            return None
        time.sleep(works[0].spec.poll_s)


def fail_trial(storage: optuna.storages.BaseStorage, trial: optuna.Trial, attribute: str, why: str) -> None:
    """Fail a claimed trial, saying why in a user attribute (:data:`ENDED`: retried; :data:`ERROR`: kept
    until a later command), unless it ended meanwhile (reaped as stale, its retry may have finished)."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial._trial_id, attribute, why)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def run_trial(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: optuna.Trial,
    execute: Callable[[optuna.Trial], float],
    heartbeat_s: float,
) -> None:
    """Run one claimed trial and record how it ended: its value, pruned, failed with an error (not retried
    by this command; the next start retries it) or interrupted (retried from its checkpoint by the next
    start)."""
    key = trial.user_attrs.get(KEY)
    try:
        with heartbeat(storage, trial._trial_id, heartbeat_s):
            value = execute(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d (%s) pruned", trial.number, key)
        return
    except Abandoned as why:
        log.warning("trial %d (%s) abandoned: %s", trial.number, key, why)
        return
    except HandBack as why:
        fail_trial(storage, trial, ENDED, "handed back")
        log.warning("trial %d (%s) handed back: %s", trial.number, key, why)
        return
    except KeyboardInterrupt:
        fail_trial(storage, trial, ENDED, "interrupted")
        raise
    except AttentionError as error:
        fail_trial(storage, trial, ERROR, str(error))
        log.error("trial %d (%s) failed: %s", trial.number, key, error)
        return
    try:
        study.tell(trial, value)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as error:
        # reaped as stale while it was in fact still running: its retry will find the finished run
        log.warning("trial %d (%s) finished after it was failed as stale (%s)", trial.number, key, error)
