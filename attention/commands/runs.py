"""``attention data | train | eval | report``: the data, one run, and figures and tables of runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attention import AttentionError
from attention.commands.options import add_data_dir, add_device, config_of, positive_int


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

    config = config_of(args)
    if args.figure:
        from attention.report.figures import check_glimpse_figure

        check_glimpse_figure(config)  # before training, not after
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
    from attention.tasks import TASKS

    if args.check:
        _check_runs(args)
        return
    for run_dir in args.run_dirs:
        result = evaluate_run(run_dir, test_seed=args.test_seed, data_dir=args.data_dir, device=args.device)
        if args.json:
            print(json.dumps(result, sort_keys=True), flush=True)
        else:
            prefix = f"{run_dir}: " if len(args.run_dirs) > 1 else ""
            print(prefix + TASKS.get(result["task"]).summary(result), flush=True)


def _check_runs(args: argparse.Namespace) -> None:
    """``eval --check``: each run's test numbers re-derived and compared with its result.json, a line (or a
    JSON object) per run as it is done, then what this machine is; non-zero exit if any differs."""
    import torch

    from attention.cpu import cpu_description
    from attention.evaluate import check_run
    from attention.runs import git_revision

    if args.test_seed is not None:
        raise AttentionError(
            "--check compares with result.json, made on the run's own test seed: drop --test-seed"
        )
    states: dict[str, list[str]] = {
        "same": [],
        "differs": [],
        "error": [],
        "no weights": [],
        "unfinished": [],
    }
    for run_dir in args.run_dirs:
        checked = check_run(run_dir, data_dir=args.data_dir, device=args.device)
        states[checked["state"]].append(run_dir)
        if args.json:
            print(json.dumps(checked, sort_keys=True), flush=True)
        else:
            found = checked.get("error") or ", ".join(
                f"{key} {now} (recorded {then})"
                for key, (now, then) in checked.get("differences", {}).items()
            )
            if checked["state"] == "differs":
                trained = checked["trained_with"]
                found += f"; trained on {trained['device']} ({trained['cpu'] or 'CPU not recorded'})"
            print(f"{run_dir}: {checked['state']}" + (f": {found}" if found else ""), flush=True)
    cpu = cpu_description()
    machine = {"cpu": cpu["model_name"], "torch_version": torch.__version__, "git_revision": git_revision()}
    if args.json:
        print(
            json.dumps(
                {"checked": {k: len(v) for k, v in states.items()}, "machine": machine}, sort_keys=True
            )
        )
    else:
        print(
            f"{len(states['same'])} same, {len(states['differs'])} differ, {len(states['error'])} could not "
            f"be evaluated, {len(states['no weights'])} without weights and {len(states['unfinished'])} "
            f"unfinished (skipped); checked with {machine['cpu']}, torch {machine['torch_version']}, "
            f"revision {machine['git_revision']}"
        )
    failed = states["differs"] + states["error"]
    if failed:
        raise AttentionError(
            f"{len(states['differs'])} run(s) re-evaluate to other numbers than their result.json and "
            f"{len(states['error'])} could not be evaluated: {', '.join(failed[:5])}"
        )


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


def register(commands: argparse._SubParsersAction) -> None:
    _register_data(commands)
    _register_train_and_eval(commands)
    _register_report(commands)


def _register_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="get and look at the data").add_subparsers(
        dest="data", required=True
    )
    fetch = data.add_parser("fetch", help="download MNIST from the public mirrors and verify it")
    add_data_dir(fetch)
    fetch.set_defaults(func=cmd_data_fetch)
    show = data.add_parser(
        "show", help="save a grid of random test cases of a task (like the paper's Fig. 2)"
    )
    show.add_argument("--task", required=True)
    show.add_argument("--canvas-size", type=int)
    show.add_argument("--clutter-count", type=int)
    show.add_argument("--test-seed", type=int, default=2)
    show.add_argument("--count", type=positive_int, default=16)
    show.add_argument("--out")
    add_data_dir(show)
    show.set_defaults(func=cmd_data_show)


def _register_train_and_eval(commands: argparse._SubParsersAction) -> None:
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
    add_data_dir(train)
    add_device(train)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "eval", help="re-derive a run's test numbers (test errors, or catch rates) from its weights"
    )
    evaluate.add_argument("run_dirs", nargs="+", metavar="run_dir")
    evaluate.add_argument("--test-seed", type=int, help="draw an independent test set with this seed")
    evaluate.add_argument(
        "--check",
        action="store_true",
        help="compare each run's re-derived numbers with its result.json (a line per run; exits non-zero "
        "if any differs; runs without a result are skipped)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object per run")
    add_data_dir(evaluate)
    add_device(evaluate)
    evaluate.set_defaults(func=cmd_eval)


def _register_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="figures and tables from runs").add_subparsers(
        dest="report", required=True
    )
    glimpses = report.add_parser(
        "glimpses", help="glimpse paths and glimpses of a trained run (paper Fig. 3)"
    )
    glimpses.add_argument("run_dir")
    glimpses.add_argument("--out", required=True)
    glimpses.add_argument("--count", type=positive_int, default=4)
    glimpses.add_argument("--test-seed", type=int)
    add_data_dir(glimpses)
    add_device(glimpses)
    glimpses.set_defaults(func=cmd_report_glimpses)
    catch = report.add_parser(
        "catch", help="a Catch run: animated GIF of it playing, catch rate curve, glimpse against ball"
    )
    catch.add_argument("run_dir")
    catch.add_argument("--out-dir", required=True, help="directory for catch_play.gif, catch_rate.png, ...")
    catch.add_argument("--games", type=positive_int, default=4, help="games in the animation (default 4)")
    catch.add_argument("--seed", type=int, help="seed of the games shown (default: the run's test seed)")
    add_device(catch)
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
