"""Tests of attention/data/mnist.py: IDX parsing, verification, data-dir resolution, fetch, splits, CLI."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attention import AttentionError
from attention.cli import main
from attention.data.mnist import (
    FILES,
    Mnist,
    default_cache_dir,
    fetch,
    find_file,
    load_mnist,
    parse_idx,
    read_verified,
    resolve_data_dir,
)

IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
UNREACHABLE = ("http://127.0.0.1:9/",)


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file: big-endian int32 magic, one int32 per dimension, then the payload."""
    return struct.pack(f">i{len(dims)}i", magic, *dims) + payload


def file_mirror(directory: Path) -> str:
    """A ``file://`` mirror string (ends with '/', as fetch appends the file name)."""
    return directory.resolve().as_uri() + "/"


# --- parse_idx on small IDX bytes -------------------------------------------------------------------------


def test_idx_images_parse_to_uint8_array_of_the_header_shape():
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8)
    raw = idx_bytes(IMAGES_MAGIC, (2, 3, 4), pixels.tobytes())
    array = parse_idx(raw, source="x", magic=IMAGES_MAGIC, shape=(2, 3, 4))
    assert array.dtype == np.uint8
    assert array.shape == (2, 3, 4)
    np.testing.assert_array_equal(array, pixels.reshape(2, 3, 4))
    array[0, 0, 0] = 99  # writable: torch.from_numpy needs it


def test_idx_labels_parse_to_a_vector():
    raw = idx_bytes(LABELS_MAGIC, (5,), bytes([3, 1, 4, 1, 5]))
    array = parse_idx(raw, source="x", magic=LABELS_MAGIC, shape=(5,))
    assert array.tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize(
    "raw, fault",
    [
        (b"\x00\x00", "no header"),
        (struct.pack(">i", IMAGES_MAGIC) + struct.pack(">i", 2), "truncated IDX header"),
        (idx_bytes(IMAGES_MAGIC, (2, 3, 4), bytes(23)), "truncated: 23 data bytes, expected 24"),
    ],
    ids=["no-header", "short-header", "short-payload"],
)
def test_truncated_idx_file_is_refused(raw, fault):
    with pytest.raises(AttentionError, match="some/source") as error:
        parse_idx(raw, source="some/source", magic=IMAGES_MAGIC, shape=(2, 3, 4))
    assert fault in str(error.value)


def test_idx_file_with_wrong_magic_is_refused():
    raw = idx_bytes(LABELS_MAGIC, (24,), bytes(24))
    with pytest.raises(AttentionError, match="wrong IDX magic 0x00000801, expected 0x00000803"):
        parse_idx(raw, source="x", magic=IMAGES_MAGIC, shape=(2, 3, 4))


def test_idx_file_with_wrong_shape_is_refused():
    raw = idx_bytes(IMAGES_MAGIC, (3, 2, 4), bytes(24))
    with pytest.raises(AttentionError, match=r"wrong shape \(3, 2, 4\), expected \(2, 3, 4\)"):
        parse_idx(raw, source="x", magic=IMAGES_MAGIC, shape=(2, 3, 4))


def test_too_long_idx_file_is_refused():
    raw = idx_bytes(IMAGES_MAGIC, (2, 3, 4), bytes(25))
    with pytest.raises(AttentionError, match="too long: 25 data bytes, expected 24"):
        parse_idx(raw, source="x", magic=IMAGES_MAGIC, shape=(2, 3, 4))


# --- files on disk: find, read, verify --------------------------------------------------------------------


def labels_file(directory: Path, payload: bytes, count: int, *, compressed: bool) -> Path:
    raw = idx_bytes(LABELS_MAGIC, (count,), payload)
    name = "train-labels-idx1-ubyte"
    path = directory / (f"{name}.gz" if compressed else name)
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    return path


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
def test_labels_file_with_right_shape_but_wrong_content_fails_its_checksum(tmp_path, compressed):
    path = labels_file(tmp_path, bytes(60000), 60000, compressed=compressed)
    with pytest.raises(AttentionError, match="checksum mismatch") as error:
        read_verified(tmp_path, "train-labels-idx1-ubyte")
    assert str(path) in str(error.value)
    assert "attention data fetch" in str(error.value)


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
def test_mnist_file_with_wrong_shape_is_refused_before_its_checksum(tmp_path, compressed):
    labels_file(tmp_path, bytes(100), 100, compressed=compressed)
    with pytest.raises(AttentionError, match=r"wrong shape \(100,\), expected \(60000,\)"):
        read_verified(tmp_path, "train-labels-idx1-ubyte")


def test_corrupt_gzip_file_is_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(AttentionError, match="cannot be read as gzip") as error:
        read_verified(tmp_path, "train-labels-idx1-ubyte")
    assert str(path) in str(error.value)
    assert "attention data fetch" in str(error.value)


def test_truncated_gzip_stream_is_refused(tmp_path):
    whole = gzip.compress(idx_bytes(LABELS_MAGIC, (60000,), bytes(60000)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AttentionError, match="cannot be read as gzip"):
        read_verified(tmp_path, "train-labels-idx1-ubyte")


def test_gz_file_is_preferred_over_a_raw_copy(tmp_path):
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(b"raw")
    (tmp_path / f"{name}.gz").write_bytes(b"gz")
    assert find_file(tmp_path, name) == tmp_path / f"{name}.gz"


def assert_names_every_file_and_fetch(message: str) -> None:
    for name in FILES:
        assert name in message
    assert "attention data fetch" in message


def test_missing_data_directory_is_refused_with_a_fetch_hint(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(AttentionError) as error:
        load_mnist(missing)
    assert str(missing) in str(error.value)
    assert_names_every_file_and_fetch(str(error.value))


def test_missing_mnist_file_is_refused_with_a_fetch_hint(tmp_path):
    labels_file(tmp_path, bytes(60000), 60000, compressed=True)  # one file present, the others missing
    with pytest.raises(AttentionError) as error:
        read_verified(tmp_path, "t10k-images-idx3-ubyte")
    assert str(tmp_path) in str(error.value)
    assert_names_every_file_and_fetch(str(error.value))


# --- where the data directory is ------------------------------------------------------------------------


def test_explicit_data_dir_wins_over_environment_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_attention_data_env_wins_over_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(None) == tmp_path / "env"


def test_without_arg_or_env_the_per_user_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTENTION_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "attention" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "attention" / "mnist"
    assert resolve_data_dir() == default_cache_dir()


def test_home_in_data_dir_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/mnist") == tmp_path / "mnist"


# --- fetch ------------------------------------------------------------------------------------------------


def test_fetch_from_unreachable_mirrors_names_files_and_directory_and_leaves_nothing(tmp_path):
    target = tmp_path / "mnist"
    with pytest.raises(AttentionError) as error:
        fetch(target, mirrors=UNREACHABLE, timeout=2.0)
    message = str(error.value)
    for name in FILES:
        assert f"{name}.gz" in message
    assert str(target) in message
    assert UNREACHABLE[0] in message
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    "payload", [b"not gzip", gzip.compress(b"gzip, but not MNIST")], ids=["not-gzip", "wrong-checksum"]
)
def test_fetch_refuses_mirror_files_that_fail_verification(tmp_path, payload):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in FILES:
        (mirror / f"{name}.gz").write_bytes(payload)
    target = tmp_path / "mnist"
    with pytest.raises(AttentionError, match="could not download"):
        fetch(target, mirrors=(file_mirror(mirror),), timeout=2.0)
    assert list(target.iterdir()) == []


@pytest.fixture(scope="module")
def fetched_dir(mnist_dir, tmp_path_factory) -> Path:
    """MNIST fetched from an unreachable mirror followed by a file:// mirror of the real files."""
    target = tmp_path_factory.mktemp("fetched") / "mnist"
    returned = fetch(target, mirrors=(*UNREACHABLE, file_mirror(mnist_dir)), timeout=2.0)
    assert returned == target
    return target


@pytest.mark.mnist
def test_fetch_falls_back_to_a_working_mirror_and_places_only_verified_files(fetched_dir):
    assert sorted(p.name for p in fetched_dir.iterdir()) == sorted(f"{name}.gz" for name in FILES)
    for name, (_magic, shape, _sha) in FILES.items():
        assert read_verified(fetched_dir, name).shape == shape


@pytest.mark.mnist
def test_fetch_keeps_files_already_verified(fetched_dir):
    before = {p.name: p.stat().st_mtime_ns for p in fetched_dir.iterdir()}
    assert fetch(fetched_dir, mirrors=UNREACHABLE, timeout=2.0) == fetched_dir
    assert {p.name: p.stat().st_mtime_ns for p in fetched_dir.iterdir()} == before


@pytest.mark.mnist
def test_fetch_replaces_a_corrupt_file(mnist_dir, tmp_path):
    target = tmp_path / "mnist"
    target.mkdir()
    for name in FILES:
        shutil.copy(find_file(mnist_dir, name), target / f"{name}.gz")
    (target / "train-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    fetch(target, mirrors=(file_mirror(mnist_dir),), timeout=2.0)
    assert read_verified(target, "train-labels-idx1-ubyte").shape == (60000,)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in FILES)


# --- real MNIST and the paper's splits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(mnist_dir) -> Mnist:
    return load_mnist(mnist_dir)


@pytest.mark.mnist
def test_real_mnist_splits_are_50000_10000_10000(mnist):
    sizes = {}
    for split in ("train", "validation", "test"):
        images, labels = mnist.split(split)
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert labels.dtype == np.int64 and len(labels) == len(images)
        assert labels.min() == 0 and labels.max() == 9
        sizes[split] = len(labels)
    assert sizes == {"train": 50000, "validation": 10000, "test": 10000}


@pytest.mark.mnist
def test_validation_is_the_last_10000_training_images(mnist):
    train_images, train_labels = mnist.split("train")
    val_images, val_labels = mnist.split("validation")
    np.testing.assert_array_equal(val_images, mnist.train_images[-10000:])
    np.testing.assert_array_equal(val_labels, mnist.train_labels[-10000:])
    np.testing.assert_array_equal(np.concatenate([train_images, val_images]), mnist.train_images)


def test_split_boundaries_on_synthetic_arrays():
    n = 50003
    synthetic = Mnist(
        train_images=np.zeros((n, 1, 1), dtype=np.uint8),
        train_labels=np.arange(n),
        test_images=np.zeros((4, 1, 1), dtype=np.uint8),
        test_labels=np.arange(100, 104),
    )
    assert synthetic.split("train")[1].tolist() == list(range(50000))
    assert synthetic.split("validation")[1].tolist() == [50000, 50001, 50002]
    assert synthetic.split("test")[1].tolist() == [100, 101, 102, 103]
    with pytest.raises(AttentionError, match="unknown split 'val'"):
        synthetic.split("val")


@pytest.mark.mnist
def test_raw_uncompressed_copy_is_accepted(mnist_dir, mnist, tmp_path):
    for name in FILES:
        source = find_file(mnist_dir, name)
        raw = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
        (tmp_path / name).write_bytes(raw)
    raw_copy = load_mnist(tmp_path)
    np.testing.assert_array_equal(raw_copy.test_images, mnist.test_images)
    np.testing.assert_array_equal(raw_copy.train_labels, mnist.train_labels)


@pytest.mark.mnist
def test_load_mnist_reads_the_directory_from_attention_data(mnist_dir, mnist, monkeypatch):
    monkeypatch.setenv("ATTENTION_DATA", str(mnist_dir))
    assert load_mnist() is mnist  # same resolved directory: cached within the process


# --- the command line ------------------------------------------------------------------------------------


def test_train_without_mnist_exits_2_with_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = f"train --task mnist --data-dir {empty} --runs-dir {tmp_path / 'runs'} --set train.epochs=1"
    command = [sys.executable, "-m", "attention.cli", *arguments.split()]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "attention data fetch" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.mnist
def test_data_show_writes_a_png(mnist_dir, tmp_path, capsys):
    out = tmp_path / "cluttered.png"
    code = main(f"data show --task cluttered --count 4 --out {out} --data-dir {mnist_dir}".split())
    assert code == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert out.stat().st_size > 1000
    assert str(out) in capsys.readouterr().out


@pytest.mark.mnist
def test_data_show_of_an_unknown_task_is_a_one_line_error(mnist_dir, tmp_path, capsys):
    code = main(f"data show --task nonsense --out {tmp_path / 'x.png'} --data-dir {mnist_dir}".split())
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'nonsense'")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
