"""Running a study or search command: how many worker processes and where (one single-thread worker per
core, one per GPU), enqueueing each file's work, starting the workers and stopping them cleanly, and the
one-line report of the trials that failed. What a worker does is attention/engine.py.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from attention import AttentionError
from attention.engine import HEARTBEAT_S, STALE_AFTER_S, WorkerSpec, failed_items, work_of, worker
from attention.storage import default_storage, storage_lock


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


@dataclass(frozen=True)
class EngineOptions:
    """How a study or a search command runs its work: the options the two share (the command line's
    common flags), with their defaults in one place. ``run_study`` and ``run_search`` take these fields as
    keyword arguments."""

    workers: int | None = None
    """Worker processes; None: one single-thread worker per core, or one per GPU (:func:`default_workers`)."""
    storage: str | None = None
    """Optuna storage URL for every file; None: each file's own journal (attention/storage.py)."""
    runs_dir: str | Path | None = None
    """Parent of the run directories; None: ``results/runs``."""
    data_dir: str | Path | None = None
    """MNIST directory; None: ``$ATTENTION_DATA``, else the user cache."""
    device: str = "auto"
    smoke: bool = False
    """A tiny version of every trial, its storage and runs in a temporary folder unless told where."""
    progress: bool = True
    heartbeat_s: float = HEARTBEAT_S
    """How often a running trial says it is alive."""
    stale_after_s: float = STALE_AFTER_S
    """How long without a heartbeat before another worker fails a RUNNING trial as stale (its worker died)."""
    population: int = 1
    """Up to this many trials trained together by each worker as one population (attention/population.py):
    a search's draws, a study's seeds of one row and stage; 1: one trial at a time."""

    def __post_init__(self) -> None:
        if self.population < 1:
            raise AttentionError(f"--population must be >= 1, got {self.population}")
        if not 0 < 2 * self.heartbeat_s < self.stale_after_s:
            raise AttentionError(
                f"--stale-after-s ({self.stale_after_s:g}) must be more than twice --heartbeat-s "
                f"({self.heartbeat_s:g}), both > 0, or live trials would be failed as stale"
            )

    def layout(self) -> tuple[int, list[str], int]:
        """:func:`worker_layout` of these options; refuses a device this machine lacks."""
        return worker_layout(self.device, self.workers)


def launch(
    kind: str,
    paths: list[Path],
    options: EngineOptions,
    **more: Any,
) -> list[tuple[WorkerSpec, optuna.Study]]:
    """Enqueue what each study or search file (``kind``) still lacks and run the workers of
    ``options.layout()`` (which refuses a device this machine lacks before anything is enqueued); they
    work through the files in order. The files were checked by the caller. Each file keeps its own
    storage (its journal, unless ``options.storage`` names one for all: one journal or database holds
    many studies, by name). Runs go to ``options.runs_dir`` (default ``results/runs``); a smoke run puts
    its storage and its runs, whichever it was not told where, in a temporary folder, so that it never
    mixes with real ones. Returns each file's spec and Optuna study."""
    import tempfile

    from attention.runs import DEFAULT_RUNS_DIR

    started = time.time()
    layout = options.layout()
    storage, runs_dir = options.storage, options.runs_dir
    if options.smoke and (storage is None or runs_dir is None):  # what it was not told: a scratch folder
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
            data_dir=None if options.data_dir is None else str(options.data_dir),
            device=options.device,
            threads=1,
            smoke=options.smoke,
            progress=options.progress,
            heartbeat_s=options.heartbeat_s,
            stale_after_s=options.stale_after_s,
            population=options.population,
            started=started,
            **more,
        )
        for path in paths
    ]
    launched = []
    for spec in specs:
        work = work_of(spec)
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
