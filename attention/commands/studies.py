"""``attention study | search``: the commands on the distributed engine, and their reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attention import AttentionError
from attention.commands.options import (
    add_data_dir,
    add_device,
    non_negative_int,
    positive_float,
    positive_int,
    runs_dir_of,
)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {
        "workers": args.workers,
        "storage": args.storage,
        "runs_dir": args.runs_dir,
        "data_dir": args.data_dir,
        "device": args.device,
        "smoke": args.smoke,
        "progress": not args.no_progress,
        "population": args.population,
    }
    # the fault timings' defaults are the engine's (attention/engine.py), given only when set
    for timing in ("heartbeat_s", "stale_after_s"):
        if getattr(args, timing) is not None:
            options[timing] = getattr(args, timing)
    return options


def cmd_study_run(args: argparse.Namespace) -> None:
    from attention.study import Selection
    from attention.study_run import run_study

    selection = Selection(tuple(args.row or ()), tuple(args.seed or ()))
    chosen = " chosen" if selection != Selection() else ""
    for summary in run_study(args.files, selection=selection, **engine_options(args)):
        print(
            f"study {summary['file']}: {summary['finished']} of {summary['units']}{chosen} runs finished "
            f"(storage {summary['storage']}, runs in {summary['runs_dir']})"
        )


def cmd_study_status(args: argparse.Namespace) -> None:
    from attention.study import load_study, study_files
    from attention.study_status import (
        status_lines,
        stored_errors,
        study_status,
        summary_dict,
        time_left_lines,
    )

    runs_dir = runs_dir_of(args)
    everything = []
    files = [str(path) for path in study_files(args.files)]  # a glob takes in searches: passed over
    for number, file in enumerate(files):
        study = load_study(file)
        statuses = study_status(study, runs_dir, stored_errors(study, args.storage))
        everything += statuses
        if args.json:
            print(json.dumps({"study": file, "units": [summary_dict(s) for s in statuses]}))
            continue
        print(("\n" if number else "") + "\n".join(status_lines(study, statuses)))
    if len(files) > 1 and not args.json:  # a queue of studies: runs they share counted once
        total = time_left_lines(everything, f"all {len(files)} files, still to train")
        if total:
            print("\n".join(["", *total]))


def cmd_study_report(args: argparse.Namespace) -> None:
    from attention.report.study_report import write_study_report

    written = write_study_report(
        Path(args.file),
        runs_dir=runs_dir_of(args),
        out_dir=Path(args.out_dir) if args.out_dir else None,
        into=Path(args.into) if args.into else None,
        data_dir=args.data_dir,
        device=args.device,
    )
    for path in written:
        print(f"wrote {path}")


def cmd_study_targets(args: argparse.Namespace) -> None:
    from attention.report.targets import write_targets

    table = write_targets(
        [Path(file) for file in args.files],
        runs_dir=runs_dir_of(args),
        into=Path(args.into) if args.into else None,
        data_dir=args.data_dir,
        device=args.device,
    )
    print(f"wrote {args.into}" if args.into else table, end="\n" if args.into else "")


def cmd_search(args: argparse.Namespace) -> None:
    words = args.words
    if words[0] == "report" and len(words) == 2:
        from attention.search_report import write_search_report

        written = write_search_report(
            Path(words[1]),
            storage=args.storage,
            out_dir=Path(args.out_dir) if args.out_dir else None,
            recipe_out=Path(args.recipe_out) if args.recipe_out else None,
        )
        for path in written:
            print(f"wrote {path}")
        return
    if len(words) != 1:
        raise AttentionError("use 'attention search FILE [options]' or 'attention search report FILE'")
    from attention.search import run_search

    summary = run_search(words[0], trials=args.trials, **engine_options(args))
    counts = ", ".join(f"{v} {k}" for k, v in summary.items() if k != "storage")
    print(f"search {words[0]}: {counts} (storage {summary['storage']})")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs workers on the engine (``study run``, ``search``)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes (default: one per visible GPU, else one single-thread worker per core)",
    )
    parser.add_argument(
        "--storage",
        help="Optuna storage: a journal file path (default: results/studies/<name>/optuna.journal) "
        "or postgresql://user@host/db to share the work between machines",
    )
    parser.add_argument(
        "--runs-dir",
        help="parent of run directories (default: results/runs; with --smoke, a temporary folder)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny version in a temporary folder, in seconds"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--population",
        type=positive_int,
        default=1,
        metavar="K",
        help="train up to K trials together as one model per worker: a search's draws, a study's seeds "
        "of one row and stage (default 1: one trial at a time; worth it on a GPU, docs/performance.md)",
    )
    parser.add_argument(
        "--heartbeat-s", type=positive_float, help="seconds between a trial's heartbeats (default 30)"
    )
    parser.add_argument(
        "--stale-after-s",
        type=positive_float,
        help="fail and retry (from its checkpoint) a running trial silent this long (default 300)",
    )
    add_data_dir(parser)
    add_device(parser)


def register(commands: argparse._SubParsersAction) -> None:
    _register_study(commands)
    _register_search(commands)


def _register_study(commands: argparse._SubParsersAction) -> None:
    study = commands.add_parser("study", help="train and report a study (a question, as a TOML file)")
    study_commands = study.add_subparsers(dest="study", required=True)
    study_run = study_commands.add_parser(
        "run",
        help="train every row x seed x stage that has no result yet; with several files, in order, each "
        "worker going on to the next file when it can claim nothing more in the earlier ones",
    )
    study_run.add_argument("files", nargs="+", metavar="file")
    study_run.add_argument(
        "--row",
        action="append",
        metavar="TEXT",
        help="train only the rows whose label contains TEXT (repeat for more; default: every row)",
    )
    study_run.add_argument(
        "--seed",
        action="append",
        type=non_negative_int,
        metavar="N",
        help="train only seed N of each row (repeat for more; default: every seed)",
    )
    add_engine_options(study_run)
    study_run.set_defaults(func=cmd_study_run)
    study_status = study_commands.add_parser(
        "status", help="each unit's state (finished, training, stopped, not started), epochs and time left"
    )
    study_status.add_argument("files", nargs="+", metavar="file")
    study_status.add_argument("--runs-dir", help="where the study's runs are (default: results/runs)")
    study_status.add_argument(
        "--storage", help="where its trials are recorded, for failed units (default: the study's journal)"
    )
    study_status.add_argument("--json", action="store_true", help="one JSON object per study")
    study_status.set_defaults(func=cmd_study_status)
    study_report = study_commands.add_parser(
        "report", help="Markdown and CSV tables (seed means, intervals, McNemar tests) and figures"
    )
    study_report.add_argument("file")
    study_report.add_argument("--runs-dir", help="where the study's runs are (default: results/runs)")
    study_report.add_argument("--out-dir", help="where to write (default: results/studies/<name>)")
    study_report.add_argument("--into", help="also replace the study's section in this Markdown document")
    add_data_dir(study_report)
    add_device(study_report)
    study_report.set_defaults(func=cmd_study_report)
    study_targets = study_commands.add_parser(
        "targets", help="one table of every row with a target across studies: met or missed, by how much"
    )
    study_targets.add_argument("files", nargs="+", metavar="file")
    study_targets.add_argument("--runs-dir", help="where the studies' runs are (default: results/runs)")
    study_targets.add_argument(
        "--into",
        help="put the table between '<!-- targets -->' and '<!-- end of targets -->' of this document",
    )
    add_data_dir(study_targets)
    add_device(study_targets)
    study_targets.set_defaults(func=cmd_study_targets)


def _register_search(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="random search: run trials (FILE), or write the best recipe and figures (report FILE)",
    )
    search.add_argument("words", nargs="+", metavar="FILE | report FILE")
    search.add_argument("--trials", type=positive_int, help="cap on the trials (default: the file's count)")
    search.add_argument("--out-dir", help="search report: where to write (default: results/studies/<name>)")
    search.add_argument("--recipe-out", help="search report: write the best recipe here too")
    add_engine_options(search)
    search.set_defaults(func=cmd_search)
