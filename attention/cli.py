"""Command line: ``attention data | train | eval | study | search | report | bench``.

Every run is ``--config FILE`` (TOML) plus ``--set key=value`` overrides on the defaults; nothing else
configures a run. User errors print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from attention import AttentionError


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from attention.config import load_toml, parse_value

    overrides: dict[str, Any] = {}
    for path in args.config or []:
        overrides.update(load_toml(path))
    if getattr(args, "task", None):
        overrides["data.task"] = args.task
    for item in args.set or []:
        if "=" not in item:
            raise AttentionError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def _config(args: argparse.Namespace):
    from attention.config import Config, with_overrides

    return with_overrides(Config(), _overrides(args))


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from attention.data.mnist import fetch

    directory = fetch(args.data_dir)
    print(f"MNIST verified in {directory}")


def cmd_data_show(args: argparse.Namespace) -> None:
    from attention.config import DataConfig
    from attention.data.mnist import load_mnist
    from attention.data.tasks import fixed_set
    from attention.report.figures import save_task_examples

    data = DataConfig(
        task=args.task,
        canvas_size=args.canvas_size,
        clutter_count=args.clutter_count,
        test_seed=args.test_seed,
    )
    test = fixed_set(load_mnist(args.data_dir), data, "test")
    out = Path(args.out or f"{args.task}-examples.png")
    save_task_examples(test.images[: args.count], test.labels[: args.count], out)
    print(f"wrote {out}")


def cmd_train(args: argparse.Namespace) -> None:
    from attention.train import fit

    config = _config(args)
    result = fit(
        config,
        runs_dir=args.runs_dir,
        run_dir=args.run_dir,
        data_dir=args.data_dir,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    from attention.tasks import TASKS

    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs_dir) / result["config_hash"]
    summary = TASKS.get(config.data.task).summary(result)
    print(f"run {run_dir}: {summary}; after {result['epochs_run']} epochs, {result['train_seconds']:.0f}s")
    if args.figure:
        from attention.report.figures import save_glimpse_paths

        save_glimpse_paths(run_dir, Path(args.figure), data_dir=args.data_dir, device=args.device)
        print(f"wrote {args.figure}")


def cmd_eval(args: argparse.Namespace) -> None:
    from attention.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, test_seed=args.test_seed, data_dir=args.data_dir, device=args.device)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        from attention.tasks import TASKS

        print(TASKS.get(result["task"]).summary(result))


def cmd_report_glimpses(args: argparse.Namespace) -> None:
    from attention.report.figures import save_glimpse_paths

    save_glimpse_paths(
        Path(args.run_dir),
        Path(args.out),
        data_dir=args.data_dir,
        device=args.device,
        count=args.count,
        test_seed=args.test_seed,
    )
    print(f"wrote {args.out}")


def cmd_report_catch(args: argparse.Namespace) -> None:
    from attention.report.catch import save_catch_figures

    for path in save_catch_figures(
        Path(args.run_dir),
        Path(args.out_dir),
        device=args.device,
        animated_games=args.games,
        seed=args.seed,
    ):
        print(f"wrote {path}")


def cmd_report_curves(args: argparse.Namespace) -> None:
    from attention.report.figures import save_curves
    from attention.report.tables import describe
    from attention.runs import load_run_config, read_metrics

    curves = []
    for run_dir in map(Path, args.run_dirs):
        config = load_run_config(run_dir)  # also refuses a directory that is not a run, in one line
        curves.append((describe(config), read_metrics(run_dir)))
    save_curves(curves, args.metric, Path(args.out), width=7.0)
    print(f"wrote {args.out}")


def cmd_report_table(args: argparse.Namespace) -> None:
    from attention.report.tables import results_table
    from attention.runs import atomic_write_bytes

    text = results_table([Path(p) for p in args.run_dirs])
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode())
        print(f"wrote {args.out}")
    else:
        print(text, end="")


def cmd_bench(args: argparse.Namespace) -> None:
    from attention import bench
    from attention.build import pick_device
    from attention.runs import write_json

    if args.figure and args.no_scaling:
        raise AttentionError("--figure plots the inference cost: drop --no-scaling to measure it")
    if args.population:
        _bench_population(args)
        return
    result = bench.run(
        quick=args.quick,
        compiled=not args.no_compile,
        data_dir=args.data_dir,
        device=pick_device(args.device),
        progress=lambda message: print(message, file=sys.stderr),
        rounds=args.rounds,
        cases=args.cases,
        scaling=not args.no_scaling,
    )
    if args.layouts:
        from attention.bench_layouts import measure_layouts

        case = bench.TRAINING_CASES[0]
        result["layouts"] = {"case": case.name, "rows": measure_layouts(case.overrides)}
    print(bench.format_table(result), end="")
    if args.layouts:
        from attention.bench_layouts import format_layouts

        print("\n" + "\n".join(format_layouts(result["layouts"]["rows"])))
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    if args.figure:
        bench.save_scaling_figure(result, Path(args.figure))
        print(f"wrote {args.figure}")


def _bench_population(args: argparse.Namespace) -> None:
    """``bench --population K``: only the comparison of a population with the same trials alone."""
    from attention import bench
    from attention.bench_population import (
        SWEEP,
        format_paired,
        format_population,
        format_saturation,
        measure_population,
        paired_on_one_thread,
        saturation,
    )
    from attention.build import pick_device
    from attention.runs import write_json

    device = pick_device(args.device)
    cases = [c for c in bench.TRAINING_CASES if args.cases is None or args.cases in c.name]
    if not cases:
        raise AttentionError(f"no training case matches '{args.cases}'")
    case = cases[0]
    rows = measure_population(
        case.overrides,
        size=args.population,
        device=str(device),
        window_s=3.0 if args.quick else 10.0,
        rounds=1 if args.quick else (args.rounds or 2),
        progress=lambda message: print(message, file=sys.stderr),
    )
    paired = sweep = None
    if device.type == "cpu":
        print("population bench: one thread, paired steps", file=sys.stderr)
        paired = paired_on_one_thread(case.overrides, size=args.population, repeats=3 if args.quick else 10)
    else:  # where a GPU fills up: a population of growing size in one process
        sweep = saturation(
            case.overrides,
            device=str(device),
            sizes=tuple(sorted({1, 2, args.population} if args.quick else {*SWEEP, args.population})),
            seconds=1.0 if args.quick else 3.0,
            progress=lambda message: print(message, file=sys.stderr),
        )
    result = {
        "machine": bench.machine(device),
        "population": {
            "case": case.name,
            "size": args.population,
            "rows": rows,
            "one_thread": paired,
            "sweep": sweep,
        },
    }
    gpu = [f"GPU: {result['machine']['gpu']}"] if result["machine"].get("gpu") else []
    print("\n".join([*bench.describe_kernel(result["machine"]["linear_kernel"]), *gpu, f"Case: {case.name}"]))
    lines = format_population(rows) + (format_paired(paired) if paired else [])
    print("\n".join(lines + (format_saturation(sweep) if sweep else [])))
    print(f"load average at the end: {result['machine']['load_average']}")
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "storage": args.storage,
        "runs_dir": args.runs_dir,
        "data_dir": args.data_dir,
        "device": args.device,
        "smoke": args.smoke,
        "progress": not args.no_progress,
        "heartbeat_s": args.heartbeat_s,
        "stale_after_s": args.stale_after_s,
    }


def cmd_study_run(args: argparse.Namespace) -> None:
    from attention.study import Selection
    from attention.study_run import run_study

    selection = Selection(tuple(args.row or ()), tuple(args.seed or ()))
    chosen = " chosen" if selection != Selection() else ""
    for summary in run_study(args.files, selection=selection, **_engine_options(args)):
        print(
            f"study {summary['file']}: {summary['finished']} of {summary['units']}{chosen} runs finished "
            f"(storage {summary['storage']}, runs in {summary['runs_dir']})"
        )


def _runs_dir(args: argparse.Namespace) -> Path:
    """``--runs-dir``, else the committed runs folder (resolved here: the runs module imports torch)."""
    from attention.runs import DEFAULT_RUNS_DIR

    return Path(args.runs_dir) if args.runs_dir else DEFAULT_RUNS_DIR


def cmd_study_status(args: argparse.Namespace) -> None:
    from attention.study import load_study, study_files
    from attention.study_status import (
        status_lines,
        stored_errors,
        study_status,
        summary_dict,
        time_left_lines,
    )

    runs_dir = _runs_dir(args)
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
        runs_dir=_runs_dir(args),
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
        runs_dir=_runs_dir(args),
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

    summary = run_search(words[0], trials=args.trials, population=args.population, **_engine_options(args))
    counts = ", ".join(f"{v} {k}" for k, v in summary.items() if k != "storage")
    print(f"search {words[0]}: {counts} (storage {summary['storage']})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attention", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress information")
    commands = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="MNIST directory (default: $ATTENTION_DATA, else the user cache)")

    def device(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")

    data = commands.add_parser("data", help="get and look at the data").add_subparsers(
        dest="data", required=True
    )
    fetch = data.add_parser("fetch", help="download MNIST from the public mirrors and verify it")
    data_dir(fetch)
    fetch.set_defaults(func=cmd_data_fetch)
    show = data.add_parser(
        "show", help="save a grid of random test cases of a task (like the paper's Fig. 2)"
    )
    show.add_argument("--task", required=True)
    show.add_argument("--canvas-size", type=int)
    show.add_argument("--clutter-count", type=int)
    show.add_argument("--test-seed", type=int, default=2)
    show.add_argument("--count", type=_positive_int, default=16)
    show.add_argument("--out")
    data_dir(show)
    show.set_defaults(func=cmd_data_show)

    train = commands.add_parser("train", help="train one run (config + overrides)")
    train.add_argument("--task", help="shorthand for --set data.task=TASK")
    train.add_argument("--config", action="append", help="TOML file of overrides (repeatable)")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. model.num_glimpses=6"
    )
    train.add_argument("--runs-dir", default="runs", help="parent of run directories (default: runs)")
    train.add_argument("--run-dir", help="exact run directory (default: RUNS_DIR/<config hash>)")
    train.add_argument("--resume", action="store_true", help="continue an unfinished run from its checkpoint")
    train.add_argument("--figure", help="also save a glimpse-path figure of the trained model to this PNG")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    data_dir(train)
    device(train)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "eval", help="re-derive a run's test numbers (test errors, or catch rates) from its weights"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--test-seed", type=int, help="draw an independent test set with this seed")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    data_dir(evaluate)
    device(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    report = commands.add_parser("report", help="figures and tables from runs").add_subparsers(
        dest="report", required=True
    )
    glimpses = report.add_parser(
        "glimpses", help="glimpse paths and glimpses of a trained run (paper Fig. 3)"
    )
    glimpses.add_argument("run_dir")
    glimpses.add_argument("--out", required=True)
    glimpses.add_argument("--count", type=_positive_int, default=4)
    glimpses.add_argument("--test-seed", type=int)
    data_dir(glimpses)
    device(glimpses)
    glimpses.set_defaults(func=cmd_report_glimpses)
    catch = report.add_parser(
        "catch", help="a Catch run: animated GIF of it playing, catch rate curve, glimpse against ball"
    )
    catch.add_argument("run_dir")
    catch.add_argument("--out-dir", required=True, help="directory for catch_play.gif, catch_rate.png, ...")
    catch.add_argument("--games", type=_positive_int, default=4, help="games in the animation (default 4)")
    catch.add_argument("--seed", type=int, help="seed of the games shown (default: the run's test seed)")
    device(catch)
    catch.set_defaults(func=cmd_report_catch)
    table = report.add_parser(
        "table", help="Markdown table of run directories (a study's table: 'attention study report')"
    )
    table.add_argument("run_dirs", nargs="+")
    table.add_argument("--out", help="write the table to this file")
    table.set_defaults(func=cmd_report_table)

    curves = report.add_parser("curves", help="a per-epoch metric of runs against the epoch (PNG)")
    curves.add_argument("run_dirs", nargs="+")
    curves.add_argument(
        "--metric", default="val_error_pct", help="a key of metrics.jsonl (default val_error_pct)"
    )
    curves.add_argument("--out", required=True)
    curves.set_defaults(func=cmd_report_curves)

    def engine(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers",
            type=_positive_int,
            help="worker processes (default: one per visible GPU, else one single-thread worker per core)",
        )
        p.add_argument(
            "--storage",
            help="Optuna storage: a journal file path (default: results/studies/<name>/optuna.journal) "
            "or postgresql://user@host/db to share the work between machines",
        )
        p.add_argument(
            "--runs-dir",
            help="parent of run directories (default: results/runs; with --smoke, a temporary folder)",
        )
        p.add_argument(
            "--smoke", action="store_true", help="a tiny version in a temporary folder, in seconds"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument(
            "--heartbeat-s", type=_positive_float, default=30.0, help="seconds between a trial's heartbeats"
        )
        p.add_argument(
            "--stale-after-s",
            type=_positive_float,
            default=300.0,
            help="fail and retry (from its checkpoint) a running trial silent this long",
        )
        data_dir(p)
        device(p)

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
        type=_non_negative_int,
        metavar="N",
        help="train only seed N of each row (repeat for more; default: every seed)",
    )
    engine(study_run)
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
    data_dir(study_report)
    device(study_report)
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
    data_dir(study_targets)
    device(study_targets)
    study_targets.set_defaults(func=cmd_study_targets)

    search = commands.add_parser(
        "search",
        help="random search: run trials (FILE), or write the best recipe and figures (report FILE)",
    )
    search.add_argument("words", nargs="+", metavar="FILE | report FILE")
    search.add_argument("--trials", type=_positive_int, help="cap on the trials (default: the file's count)")
    search.add_argument("--out-dir", help="search report: where to write (default: results/studies/<name>)")
    search.add_argument("--recipe-out", help="search report: write the best recipe here too")
    search.add_argument(
        "--population",
        type=_positive_int,
        default=1,
        help="train up to K trials together as one model per worker (default 1: one trial at a time)",
    )
    engine(search)
    search.set_defaults(func=cmd_search)

    bench = commands.add_parser("bench", help="training throughput and inference cost against image size")
    bench.add_argument("--json", help="also write the measurements to this JSON file")
    bench.add_argument("--figure", help="also save the log-log cost figure to this PNG")
    bench.add_argument("--quick", action="store_true", help="few repetitions and small sizes (a smoke test)")
    bench.add_argument(
        "--rounds",
        type=_positive_int,
        help="rounds pooled per figure (default 3; 1 with --quick)",
    )
    bench.add_argument(
        "--no-compile", action="store_true", help="skip the compiled (train.compile) training cases"
    )
    bench.add_argument("--cases", help="only the training cases whose name contains this text")
    bench.add_argument("--no-scaling", action="store_true", help="skip the inference cost against image size")
    bench.add_argument(
        "--layouts",
        action="store_true",
        help="also measure how to split the cores between training processes (workers x threads)",
    )
    bench.add_argument(
        "--population",
        type=_positive_int,
        metavar="K",
        help="only compare a population of K trials with the same trials alone (images/s summed over "
        "the trials; the first case, or the first that --cases names)",
    )
    data_dir(bench)
    device(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    try:
        args.func(args)
    except AttentionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; an unfinished run continues with --resume, a study or search by running the same "
            "command again",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
