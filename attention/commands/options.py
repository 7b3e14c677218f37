"""Options and argument types that several command groups share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attention import AttentionError


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="MNIST directory (default: $ATTENTION_DATA, else the user cache)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` files, then ``--task``, then ``--set`` pairs: the one override path of a run."""
    from attention.config import load_toml, parse_value

    result: dict[str, Any] = {}
    for path in args.config or []:
        result.update(load_toml(path))
    if getattr(args, "task", None):
        result["data.task"] = args.task
    for item in args.set or []:
        if "=" not in item:
            raise AttentionError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        result[key.strip()] = parse_value(value.strip())
    return result


def config_of(args: argparse.Namespace):
    from attention.config import Config, with_overrides

    return with_overrides(Config(), overrides(args))


def runs_dir_of(args: argparse.Namespace) -> Path:
    """``--runs-dir``, else the committed runs folder (resolved here: the runs module imports torch)."""
    from attention.runs import DEFAULT_RUNS_DIR

    return Path(args.runs_dir) if args.runs_dir else DEFAULT_RUNS_DIR
