"""MNIST: the four canonical IDX files, verified by checksum, with the RAM paper's splits.

Splits: ``train`` = the first 50,000 training images, ``validation`` = the last 10,000, ``test`` = the
10,000 test images. Files may be gzip-compressed (``.gz``) or raw; the SHA-256 of the *uncompressed* bytes
is checked, so any faithful copy is accepted.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attention import AttentionError

log = logging.getLogger(__name__)

# name -> (IDX magic, shape, sha256 of the uncompressed bytes)
FILES: dict[str, tuple[int, tuple[int, ...], str]] = {
    "train-images-idx3-ubyte": (
        0x803,
        (60000, 28, 28),
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        0x801,
        (60000,),
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        0x803,
        (10000, 28, 28),
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        0x801,
        (10000,),
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

TRAIN_SIZE = 50000
SPLITS = ("train", "validation", "test")


def default_cache_dir() -> Path:
    """Per-user cache: $XDG_CACHE_HOME/attention/mnist, else ~/.cache/attention/mnist."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attention" / "mnist"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The MNIST directory: the explicit argument, else $ATTENTION_DATA, else the per-user cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("ATTENTION_DATA"):
        return Path(os.environ["ATTENTION_DATA"]).expanduser()
    return default_cache_dir()


def _missing_message(directory: Path) -> str:
    names = ", ".join(f"{name}[.gz]" for name in FILES)
    return (
        f"MNIST not found in {directory}: run 'attention data fetch' or put {names} there "
        "(or point --data-dir / ATTENTION_DATA at a copy)"
    )


def find_file(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise AttentionError(_missing_message(directory))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise AttentionError(
            f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'} "
            f"({error}); delete it and run 'attention data fetch'"
        ) from None


def parse_idx(raw: bytes, *, source: str, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse IDX bytes (big-endian int32 magic, one int32 per dimension, then uint8 data).

    Refuses a wrong magic, a wrong shape, or a truncated or over-long payload, naming ``source``.
    """
    if len(raw) < 4:
        raise AttentionError(f"{source}: truncated IDX file ({len(raw)} bytes, no header)")
    (found_magic,) = struct.unpack(">i", raw[:4])
    if found_magic != magic:
        raise AttentionError(f"{source}: wrong IDX magic 0x{found_magic:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise AttentionError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if tuple(dims) != tuple(shape):
        raise AttentionError(f"{source}: wrong shape {tuple(dims)}, expected {tuple(shape)}")
    expected = int(np.prod(shape))
    payload = len(raw) - header
    if payload != expected:
        fault = "truncated" if payload < expected else "too long"
        raise AttentionError(f"{source}: {fault}: {payload} data bytes, expected {expected}")
    # A writable copy: torch refuses to share memory with read-only buffers.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_verified(directory: Path, name: str) -> np.ndarray:
    """Read one of the four MNIST files from ``directory``, checking format and SHA-256."""
    magic, shape, sha256 = FILES[name]
    path = find_file(directory, name)
    raw = _read_bytes(path)
    array = parse_idx(raw, source=str(path), magic=magic, shape=shape)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise AttentionError(
            f"{path}: checksum mismatch (sha256 {digest[:12]}..., expected {sha256[:12]}...); "
            "delete it and run 'attention data fetch'"
        )
    return array


@dataclass(frozen=True)
class Mnist:
    """The MNIST arrays as uint8 (N, 28, 28) images and int64 (N,) labels, with the paper's splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "train":
            return self.train_images[:TRAIN_SIZE], self.train_labels[:TRAIN_SIZE]
        if name == "validation":
            return self.train_images[TRAIN_SIZE:], self.train_labels[TRAIN_SIZE:]
        if name == "test":
            return self.test_images, self.test_labels
        raise AttentionError(f"unknown split '{name}'; use one of {', '.join(SPLITS)}")


@functools.lru_cache(maxsize=4)
def _load(directory: Path) -> Mnist:
    def labels(name: str) -> np.ndarray:
        array = read_verified(directory, name).astype(np.int64)
        if array.max() > 9:
            raise AttentionError(f"{directory / name}: labels outside 0..9")
        return array

    return Mnist(
        train_images=read_verified(directory, "train-images-idx3-ubyte"),
        train_labels=labels("train-labels-idx1-ubyte"),
        test_images=read_verified(directory, "t10k-images-idx3-ubyte"),
        test_labels=labels("t10k-labels-idx1-ubyte"),
    )


def load_mnist(data_dir: str | Path | None = None) -> Mnist:
    """Load and verify MNIST from :func:`resolve_data_dir` (cached per directory within a process)."""
    directory = resolve_data_dir(data_dir).resolve()
    if not directory.is_dir():
        raise AttentionError(_missing_message(directory))
    return _load(directory)


def fetch(
    data_dir: str | Path | None = None, mirrors: tuple[str, ...] = MIRRORS, timeout: float = 30.0
) -> Path:
    """Download the four files into the data directory, verifying each before moving it into place.

    Files already present and verified are kept. A download goes to a temporary file in the same directory
    and is renamed only after its uncompressed SHA-256 matches, so an interrupted fetch leaves nothing
    half-written under the final name.
    """
    directory = resolve_data_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, (_magic, _shape, sha256) in FILES.items():
        try:
            read_verified(directory, name)
            log.info("%s already present and verified", name)
            continue
        except AttentionError:
            pass
        for mirror in mirrors:
            url = f"{mirror}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError, ValueError) as error:
                log.info("%s: %s", url, error)
                continue
            try:
                digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
            except (OSError, EOFError):
                log.info("%s: not a gzip file", url)
                continue
            if digest != sha256:
                log.info("%s: checksum mismatch", url)
                continue
            from attention.runs import atomic_write_bytes  # (the runs module imports torch)

            atomic_write_bytes(directory / f"{name}.gz", payload)  # whole or not at all
            log.info("fetched %s from %s", name, mirror)
            break
        else:
            failures.append(name)
    if failures:
        raise AttentionError(
            f"could not download {', '.join(f + '.gz' for f in failures)} from any mirror "
            f"({', '.join(mirrors)}); copy the four MNIST IDX files into {directory} by hand, "
            "or point --data-dir / ATTENTION_DATA at an existing copy"
        )
    _load.cache_clear()
    return directory
