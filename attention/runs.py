"""Run directories: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``model.pt`` and ``result.json``.

A run is identified by the hash of its resolved config (seed included); files are written atomically
(temporary file + rename) so an interrupted run never leaves a half-written file under its real name.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from attention import AttentionError
from attention.config import Config, from_dict

DEFAULT_RUNS_DIR = Path("results/runs")
"""Where studies and searches keep their runs, unless told otherwise (committed: every result's source)."""
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
RESULT = "result.json"
LOCK = ".lock"
"""Held (``flock``) by the process that trains the run: two studies that share a run, or a study and a
hand-started ``attention train``, must never write one directory at once."""

log = logging.getLogger(__name__)


class RunBusy(AttentionError):
    """Another process is training this run directory."""


def temporary_beside(path: Path, *, suffix: str = ".tmp") -> tuple[int, str]:
    """A temporary file in ``path``'s directory (so the final rename is atomic), with the permissions a
    plainly created file would get (mkstemp's are owner-only). The directory is made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return handle, temporary


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output file that could not be written later: its directory is made
    if missing and must take a new file (a command that measures for minutes should not fail at the end)."""
    path = Path(path)
    if path.is_dir():
        raise AttentionError(f"cannot write {path}: it is a directory; name a file")
    try:
        handle, temporary = temporary_beside(path)
    except OSError as error:
        raise AttentionError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(temporary)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, renamed over it when complete."""
    path = Path(path)
    temporary = None
    try:
        handle, temporary = temporary_beside(path)
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise AttentionError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AttentionError(f"{path} does not exist; is {path.parent} a run directory?") from None
    except json.JSONDecodeError as error:
        raise AttentionError(f"{path} is not valid JSON ({error})") from None


def atomic_torch_save(path: Path, value: Any) -> None:
    """torch.save, atomically. Serialized in memory first: torch.save names its archive after the file it
    writes, so saving straight to a temporary file would make the same weights differ byte for byte (and
    in digest, which identifies the runs that start from them)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise AttentionError(f"{path} does not exist") from None
    except Exception as error:  # a corrupt or foreign file: say which and stop
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AttentionError(f"{path} cannot be loaded as a weights-only checkpoint ({first_line})") from None


def load_weights_into(model: torch.nn.Module, state: Any, path: Path, *, what: str) -> None:
    """``model.load_state_dict(state)``, refused in one line when the weights saved in ``path`` do not fit
    (another model's sizes, or a file of another kind); ``what`` ends the message: what to do about it."""
    why = _misfit(model.state_dict(), state)
    if why is None:
        try:
            model.load_state_dict(state)
            return
        except (RuntimeError, TypeError, AttributeError, KeyError) as error:
            why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise AttentionError(f"the weights in {path} do not fit this model ({why}); {what}") from None


def _misfit(expected: dict[str, torch.Tensor], state: Any) -> str | None:
    """What keeps ``state`` from loading where ``expected`` is the model's state dict, briefly (a few names
    of each kind; load_state_dict's own message lists every key over several lines), or None."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict of weights"

    def names(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    other_shape = [
        f"{key} {tuple(state[key].shape)} for {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and isinstance(state[key], torch.Tensor) and state[key].shape != value.shape
    ]
    parts = [
        f"{label}: {names(keys)}"
        for label, keys in (("missing", missing), ("not in the model", unexpected), ("shape", other_shape))
        if keys
    ]
    return "; ".join(parts) or None


def load_run_config(run_dir: Path) -> Config:
    return from_dict(Config, read_json(Path(run_dir) / CONFIG))


def weights_file(source: str | Path) -> Path:
    """The weights a ``train.init_from`` names: a run directory's model.pt, or the file itself."""
    path = Path(source)
    found = path / WEIGHTS if path.is_dir() else path
    if not found.is_file():
        raise AttentionError(
            f"train.init_from: {found} does not exist; give a finished run directory or its {WEIGHTS}"
        )
    return found


@functools.lru_cache(maxsize=1024)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_digest(source: str | Path) -> str:
    """sha256 of the weights file ``source`` names (cached while the file is unchanged)."""
    path = weights_file(source).resolve()
    stat = path.stat()
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)


TIME_CAP = "train.time_budget_s"
"""The one field a finished run may differ in from the config it stands for (:func:`trained_as`)."""

# identity of each run directory already read (whole, or ignoring some fields): a config.json is written
# once and never changed
_identities: dict[tuple[Path, tuple[str, ...]], str | None] = {}


def run_identity(run_dir: Path, *, ignoring: tuple[str, ...] = ()) -> str | None:
    """The identity (:func:`config_hash`, less the dotted fields in ``ignoring``) of the run in ``run_dir``,
    or None if it is not a readable run."""
    from attention.config import config_hash

    key = (Path(run_dir).resolve(), ignoring)
    if key not in _identities:
        try:
            _identities[key] = config_hash(load_run_config(key[0]), ignoring=ignoring)
        except AttentionError:
            return None  # not (yet) a run, or one whose init_from weights are gone: not cached
    return _identities[key]


def cut_short_by(result: dict) -> str | None:
    """The stopping rule (``stopped_because``) that ended a finished run before its schedule did, or None
    when it ran its epochs (a cap that fired after the last epoch cut nothing)."""
    run, budget = result["epochs_run"], result.get("epochs_budget", result["epochs_run"])
    stopped = result.get("stopped_because", "epochs")
    return None if stopped == "epochs" or run >= budget else stopped


def trained_as(run_dir: Path, config: Config) -> bool:
    """Whether the run in ``run_dir`` is ``config``'s run: it has the same identity, or it is a finished run
    that differs only in a time cap (``train.time_budget_s``) that never stopped it and that ``config`` does
    not tighten. A cap in seconds only ends training early, so a run it did not end trained exactly what
    the run without it (or with a looser cap) trains: lifting a cap keeps every run it did not cut short,
    and only those it cut are trained again."""
    from attention.config import config_hash

    if run_identity(run_dir) == config_hash(config):
        return True
    if not (Path(run_dir) / RESULT).is_file():
        return False
    if run_identity(run_dir, ignoring=(TIME_CAP,)) != config_hash(config, ignoring=(TIME_CAP,)):
        return False
    result = read_json(Path(run_dir) / RESULT)
    if "epochs_run" not in result:
        return False  # not a result this trainer wrote: nothing says the cap did not cut it
    ran_with = load_run_config(run_dir).train.time_budget_s
    wanted = config.train.time_budget_s
    looser = wanted is None or (ran_with is not None and wanted >= ran_with)
    return looser and cut_short_by(result) != "time_budget"


def find_run(config: Config, runs_dir: Path, *, missing_ok: bool = False) -> Path | None:
    """The run directory of ``config`` under ``runs_dir``: ``<identity>`` if present, else the run whose
    config.json has the same identity (runs made before the identity rule of today carry an older name).
    A finished run that a time cap did not cut and that differs from ``config`` only in that cap
    (:func:`trained_as`) comes before an unfinished run of the same identity, and stands in for a missing
    one. Refuses when there is none, or returns None with ``missing_ok``."""
    from attention.config import config_hash

    runs_dir = Path(runs_dir)
    wanted = config_hash(config)
    direct = runs_dir / wanted
    direct_exists = (direct / CONFIG).is_file()
    if direct_exists and (direct / RESULT).is_file():
        return direct  # the common case: no need to read every other run's config
    candidates = [path.parent for path in sorted(runs_dir.glob(f"*/{CONFIG}"))]
    if direct_exists:
        exact = direct
    else:
        exact = next((c for c in candidates if run_identity(c) == wanted), None)
    if exact is not None and (exact / RESULT).is_file():
        return exact
    uncapped = config_hash(config, ignoring=(TIME_CAP,))  # a cheap filter before trained_as reads results
    twins = (c for c in candidates if run_identity(c, ignoring=(TIME_CAP,)) == uncapped)
    found = next((c for c in twins if (c / RESULT).is_file() and trained_as(c, config)), None)
    if found is not None:
        return found
    if exact is not None or missing_ok:
        return exact
    raise AttentionError(
        f"no run of this configuration under {runs_dir} (expected {direct.name}); train it first"
    )


def finished_result(run_dir: Path, config: Config, *, resume: bool) -> dict[str, Any] | None:
    """Every trainer's first look at its run directory: the result of a finished run of ``config``
    (:func:`trained_as`), or None when there is a run to train (a new one, or an unfinished one with
    ``resume``). Refuses a directory of another configuration, and an unfinished run without ``resume``."""
    if not (run_dir / CONFIG).exists():
        return None
    if not trained_as(run_dir, config):
        raise AttentionError(f"{run_dir} holds a run of another configuration; choose another --run-dir")
    if (run_dir / RESULT).exists():
        log.info("run %s is finished; returning its result", run_dir)
        return read_json(run_dir / RESULT)
    if (run_dir / CHECKPOINT).exists() and not resume:
        if run_is_busy(run_dir):  # not a stopped run: --resume would not help
            raise RunBusy(busy_message(run_dir))
        raise AttentionError(
            f"{run_dir} holds an unfinished run: pass --resume to continue it, "
            "or delete the directory to start again"
        )
    return None


def lock_within(handle: IO, seconds: float) -> bool:
    """Take an exclusive lock on the open file ``handle``, trying for at most ``seconds``; whether it was
    taken (the kernel releases it when the file is closed or the process dies)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@contextlib.contextmanager
def holding_run(run_dir: Path, *, wait: bool = False, patience_s: float = 2.0) -> Iterator[None]:
    """Hold ``run_dir`` for training (its :data:`LOCK` file) for the body. If another process holds it for
    longer than ``patience_s`` (:func:`run_is_busy` holds it for an instant), wait for it with ``wait`` (a
    search's retry whose first worker still runs), else refuse with :class:`RunBusy`. The lock is the
    kernel's: a killed process releases it."""
    with open(Path(run_dir) / LOCK, "a") as handle:
        if not lock_within(handle, patience_s):  # not only a probe's instant (run_is_busy)
            if not wait:
                raise RunBusy(busy_message(run_dir))
            log.warning("waiting for %s: another process is training it", run_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def busy_message(run_dir: Path) -> str:
    return (
        f"{run_dir} is being trained by another process; wait for it to end (or stop it), then run this again"
    )


def run_is_busy(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir`` for training now (see :func:`holding_run`); writes nothing.

    It asks for a shared lock, which a trainer's exclusive one refuses: an exclusive request on a file
    opened for reading fails on NFS (flock emulated with fcntl), and so does any lock where the file
    system keeps none; there the run counts as free (its trainer's lock still guards it)."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise AttentionError(f"{path}, line {number}, is not valid JSON ({error})") from None
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(
        Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    )


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
