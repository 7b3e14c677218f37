"""Where the engine's trials live (attention/engine.py): a storage URL and the lock around its
check-then-act sections.

A URL is a path or ``journal:PATH`` (Optuna's journal file, safe for several processes on one machine: the
default, in the study's folder), or ``postgresql://...`` for many machines. SQLite is refused: it is not safe
for several worker processes. Check-then-enqueue and check-then-reap sequences run under
:func:`storage_lock`: a file lock beside a journal, an advisory lock in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

import optuna

from attention import AttentionError

# Advisory-lock key of the enqueue/reap section in PostgreSQL (any fixed 64-bit number).
PG_LOCK_KEY = 0x61747465  # "atte"


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


def default_storage(path: str | Path) -> str:
    """The embedded storage of a study or search file: a journal file in its folder."""
    from attention.study import study_folder

    return f"journal:{study_folder(Path(path)) / 'optuna.journal'}"
