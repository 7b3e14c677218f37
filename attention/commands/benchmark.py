"""``attention bench``: training throughput, inference cost against image size, and populations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attention import AttentionError
from attention.commands.options import add_data_dir, add_device, positive_int


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> None:
    from attention import bench
    from attention.build import pick_device
    from attention.runs import check_writable, write_json

    if args.figure and args.no_scaling:
        raise AttentionError("--figure plots the inference cost: drop --no-scaling to measure it")
    for output in (args.json, args.figure):
        if output:
            check_writable(Path(output))
    if args.population:
        _bench_population(args)
        return
    result = bench.run(
        quick=args.quick,
        compiled=not args.no_compile,
        data_dir=args.data_dir,
        device=pick_device(args.device),
        progress=_log,
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
        from attention.bench_scaling import save_scaling_figure

        save_scaling_figure(result, Path(args.figure))
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
        progress=_log,
    )
    paired = sweep = None
    if device.type == "cpu":
        _log("population bench: one thread, paired steps")
        paired = paired_on_one_thread(case.overrides, size=args.population, repeats=3 if args.quick else 10)
    else:  # where a GPU fills up: a population of growing size in one process
        sweep = saturation(
            case.overrides,
            device=str(device),
            sizes=tuple(sorted({1, 2, args.population} if args.quick else {*SWEEP, args.population})),
            seconds=1.0 if args.quick else 3.0,
            progress=_log,
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


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="training throughput and inference cost against image size")
    bench.add_argument("--json", help="also write the measurements to this JSON file")
    bench.add_argument("--figure", help="also save the log-log cost figure to this PNG")
    bench.add_argument("--quick", action="store_true", help="few repetitions and small sizes (a smoke test)")
    bench.add_argument(
        "--rounds",
        type=positive_int,
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
        type=positive_int,
        metavar="K",
        help="only compare a population of K trials with the same trials alone (images/s summed over "
        "the trials; the first case, or the first that --cases names)",
    )
    add_data_dir(bench)
    add_device(bench)
    bench.set_defaults(func=cmd_bench)
