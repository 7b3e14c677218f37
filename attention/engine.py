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

Storage is a URL: a path or ``journal:PATH`` (Optuna's journal file, safe for several processes on one
machine: the default, in the study's folder), or ``postgresql://...`` for many machines. Check-then-enqueue
and check-then-reap sequences run under a lock: a file lock beside a journal, an advisory lock in
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from attention import AttentionError

log = logging.getLogger(__name__)

KEY = "item"
"""User attribute of a trial: the key of the work item it runs."""
HEARTBEAT = "heartbeat"
ERROR = "error"
"""User attribute of a trial that failed with an error (retried only by a later start)."""
ENDED = "ended_because"
"""User attribute of a trial failed by the engine: 'stale', 'interrupted' or 'handed back' (retried)."""
# Advisory-lock key of the enqueue/reap section in PostgreSQL (any fixed 64-bit number).
PG_LOCK_KEY = 0x61747465  # "atte"


@dataclass(frozen=True)
class Item:
    """A unit of work: ``key`` names it; ``params`` are fixed Optuna parameters (a search's draw),
    ``attrs`` more user attributes recorded on its trial."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- storage


def journal_path(url: str) -> Path | None:
    """The journal file a storage URL names, or None for a database URL."""
    if url.startswith("journal:"):
        return Path(url[len("journal:") :])
    if "://" in url:
        return None
    return Path(url)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage of ``url`` (see the module docstring); refuses a URL it cannot open in one line."""
    path = journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # the open-lock (O_EXCL) also works on network file systems without symlink support
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        raise AttentionError(
            f"storage {url}: SQLite is not safe for several worker processes; use a journal file (the "
            "default) on one machine or postgresql://... for many"
        )
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as error:  # a driver missing, a server down: say which in one line
            text = str(error)
            if ("already exists" in text or "duplicate key" in text) and attempt < 4:
                # another worker is creating Optuna's tables at this moment; they exist once it is done
                time.sleep(0.5 * (attempt + 1))
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
            raise AttentionError(
                f"cannot open storage {url} ({first}); for PostgreSQL install the 'postgres' extra "
                "(pip install -e '.[postgres]') and check the server and the URL"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def storage_lock(url: str, storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """Exclusive section across every process using this storage (see the module docstring)."""
    path = journal_path(url)
    if path is not None:
        with open(f"{path}.engine-lock", "a") as handle:  # not .lock: the journal backend uses that
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    from sqlalchemy import text

    with storage.engine.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
            connection.commit()


def open_study(
    url: str, name: str, *, sampler_seed: int = 0, pruner: optuna.pruners.BasePruner | None = None
) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = open_storage(url)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=sampler_seed),
        pruner=pruner or optuna.pruners.NopPruner(),
    )
    return study, storage


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
    heartbeat_s: float = 30.0
    stale_after_s: float = 300.0
    poll_s: float = 5.0
    population: int = 1
    """A search's trials trained together by each worker, as one population (attention/population.py)."""
    rows: tuple[str, ...] = ()
    """A study run limited to the rows whose label contains one of these (attention/study.py: Selection)."""
    seeds: tuple[int, ...] = ()
    """A study run limited to these seeds."""
    started: float | None = None
    """When the command started (``time.time()``): items that failed with an error before it are retried,
    those that fail after it are not (they would fail again), and are reported at its end."""


@dataclass
class Work:
    """One study or search file's work, as a worker process holds it."""

    spec: WorkerSpec
    execute: Callable[[optuna.Trial], float]
    """Run a claimed trial; returns its value."""
    refill: Callable[[], None]
    """Enqueue what is pending (called under :func:`storage_lock`)."""
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    accept: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which waiting trials this worker may claim now (a study skips a unit whose run another process is
    training: it would only wait for it)."""
    first: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which waiting trials to claim before the others (a study's stopped runs: finish what was started)."""
    wanted: Callable[[optuna.trial.FrozenTrial], bool] | None = None
    """Which of the file's trials this command works on at all (a study run limited to some rows or
    seeds); None: every one. The others are neither claimed nor waited for."""

    def claimable(self, trial: optuna.trial.FrozenTrial) -> bool:
        return (self.wanted is None or self.wanted(trial)) and (self.accept is None or self.accept(trial))

    def active(self) -> bool:
        """Whether a trial this command works on waits or runs (it may need this worker yet)."""
        states = (TrialState.RUNNING, TrialState.WAITING)
        trials = self.study.get_trials(deepcopy=False, states=states)
        return any(self.wanted is None or self.wanted(trial) for trial in trials)


def _work(spec: WorkerSpec) -> Work:
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
    if first.population > 1:
        from attention.population_search import population_worker

        if len(specs) > 1:
            raise AttentionError("--population trains the trials of one search file at a time")
        return population_worker(first)
    works = [_work(spec) for spec in specs]
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
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial._trial_id, ENDED, "handed back")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.warning("trial %d (%s) handed back: %s", trial.number, key, why)
        return
    except KeyboardInterrupt:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial._trial_id, ENDED, "interrupted")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        raise
    except AttentionError as error:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial._trial_id, ERROR, str(error))
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.error("trial %d (%s) failed: %s", trial.number, key, error)
        return
    try:
        study.tell(trial, value)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as error:
        # reaped as stale while it was in fact still running: its retry will find the finished run
        log.warning("trial %d (%s) finished after it was failed as stale (%s)", trial.number, key, error)


def default_workers(device: str) -> tuple[int, list[str], int]:
    """(workers, their devices, threads each) for ``--device``: ``auto`` or ``cuda``, one per visible GPU,
    each pinned to its device; a named device (``cuda:1``), one worker there; ``cpu`` (or ``auto`` without
    a GPU), one single-thread worker per core (OpenMP threads of one process waiting on each other were
    measured far slower on a loaded machine; ``attention bench --layouts`` measures every split on the
    machine at hand). A device this machine lacks is refused, as by ``attention train``."""
    import torch

    from attention.build import pick_device
    from attention.cpu import usable_cores

    chosen = pick_device(device)
    if chosen.type == "cpu":
        cores = usable_cores()
        return cores, ["cpu"] * cores, 1
    if device in ("auto", "cuda"):
        count = torch.cuda.device_count()
        return count, [f"cuda:{i}" for i in range(count)], 1
    return 1, [device], 1


def worker_layout(device: str, workers: int | None) -> tuple[int, list[str], int]:
    """(workers, their devices, threads each): :func:`default_workers`, or ``workers`` of them spread over
    its devices round robin, a CPU's cores shared out between them. Refuses a device this machine lacks."""
    from attention.cpu import usable_cores

    count, devices, threads = default_workers(device)
    if workers is None:
        return count, devices, threads
    devices = [devices[i % len(devices)] for i in range(workers)]
    threads = max(1, usable_cores() // workers) if devices[0] == "cpu" else 1
    return workers, devices, threads


def start_workers(specs: list[WorkerSpec], layout: tuple[int, list[str], int]) -> int:
    """Run ``layout``'s worker processes (:func:`worker_layout`), each working through ``specs`` in order
    (:func:`worker`), and wait for them; a single worker runs in this process. Returns the number of trials
    run here (0 when they ran in worker processes). Ctrl-C stops every worker cleanly."""
    count, devices, threads = layout
    per_worker = [tuple(_with(s, device=devices[i], threads=threads) for s in specs) for i in range(count)]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # as in a worker process (see _worker_main)
    if count == 1:
        return worker(*per_worker[0])
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    processes = [
        context.Process(target=_worker_main, args=mine, name=f"worker-{i}")
        for i, mine in enumerate(per_worker)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches every worker already; a signal sent to this process alone does not
        # (and a shell's background job ignores SIGINT, so pass on SIGTERM, which every worker handles)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        # give them time to fail their trials as interrupted
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed:
        raise AttentionError(f"worker(s) {', '.join(failed)} ended with an error; see the log above")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_main(*specs: WorkerSpec) -> None:
    # a batch system stops a job with SIGTERM: stop as cleanly as on Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(processName)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        worker(*specs)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except AttentionError as error:
        print(f"error: {error}", flush=True)
        raise SystemExit(2) from None


def default_storage(path: str | Path) -> str:
    """The embedded storage of a study or search file: a journal file in its folder."""
    from attention.study import study_folder

    return f"journal:{study_folder(Path(path)) / 'optuna.journal'}"


def launch(
    kind: str,
    paths: list[Path],
    *,
    layout: tuple[int, list[str], int],
    storage: str | None,
    runs_dir: str | Path | None,
    data_dir: str | Path | None,
    device: str,
    smoke: bool,
    progress: bool,
    heartbeat_s: float,
    stale_after_s: float,
    **more: Any,
) -> list[tuple[WorkerSpec, optuna.Study]]:
    """Enqueue what each study or search file (``kind``) still lacks and run ``layout``'s workers
    (:func:`worker_layout`, called first by the caller so that a device this machine lacks is refused
    before anything is enqueued), which work through them in order; the files were checked by the caller.
    Each file keeps its own storage (its journal, unless ``storage`` names one for all: one journal or
    database holds many studies, by name). Runs go to ``runs_dir`` (default ``results/runs``); a smoke
    run puts its storage and its runs, whichever it was not told where, in a temporary folder, so that it
    never mixes with real ones. Returns each file's spec and Optuna study."""
    import tempfile

    started = time.time()
    if not 0 < 2 * heartbeat_s < stale_after_s:
        raise AttentionError(
            f"--stale-after-s ({stale_after_s:g}) must be more than twice --heartbeat-s ({heartbeat_s:g}), "
            "both > 0, or live trials would be failed as stale"
        )
    from attention.runs import DEFAULT_RUNS_DIR

    if smoke and (storage is None or runs_dir is None):  # what it was not told goes to a scratch folder
        scratch = Path(tempfile.mkdtemp(prefix=f"attention-smoke-{Path(paths[0]).stem}-"))
        storage = storage or f"journal:{scratch / 'optuna.journal'}"
        runs_dir = runs_dir or scratch / "runs"
    runs_dir = runs_dir or DEFAULT_RUNS_DIR
    specs = [
        WorkerSpec(
            kind=kind,
            file=str(path),
            storage=storage or default_storage(path),
            runs_dir=str(runs_dir),
            data_dir=None if data_dir is None else str(data_dir),
            device=device,
            threads=1,
            smoke=smoke,
            progress=progress,
            heartbeat_s=heartbeat_s,
            stale_after_s=stale_after_s,
            started=started,
            **more,
        )
        for path in paths
    ]
    launched = []
    for spec in specs:
        work = _work(spec)
        with storage_lock(spec.storage, work.storage):
            work.refill()
        launched.append((spec, work.study))
    start_workers(specs, layout)
    failed = [
        f"{Path(spec.file).name}: {key}: {error}"
        for spec, study in launched
        for key, error in failed_items(study, started).items()
    ]
    if failed:
        more_text = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise AttentionError(
            f"{len(failed)} trial(s) failed: {'; '.join(failed[:5])}{more_text}; fix the cause and run the "
            "same command again, which retries them"
        )
    return launched


def _with(spec: WorkerSpec, **changes: Any) -> WorkerSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)
