"""Command line: ``attention data | train | eval | study | search | report | bench``.

Every run is ``--config FILE`` (TOML) plus ``--set key=value`` overrides on the defaults; nothing else
configures a run. User errors print one line and exit with status 2, without a traceback. The commands
themselves live in ``attention.commands``, one module per group.
"""

from __future__ import annotations

import argparse
import logging
import sys

from attention import AttentionError
from attention.commands import benchmark, runs, studies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attention", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress information")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (runs, studies, benchmark):  # the order of `attention --help`
        group.register(commands)
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
