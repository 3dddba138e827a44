"""The ``iris-nb`` command line: ``iris-nb quickstart`` (and more subcommands as they land)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iris-nb", description="Reversion of CMZ spectral-line cubes.")
    parser.add_argument("--version", action="version", version=f"iris_nb {__version__}")
    sub = parser.add_subparsers(dest="command")
    quick = sub.add_parser("quickstart", help="revert a built-in synthetic cube and write PNG figures")
    quick.add_argument("--output", default="iris_nb_output", help="folder for the figures (default: %(default)s)")
    quick.add_argument("--seed", type=int, default=0, help="random seed of the synthetic cube")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``iris-nb``; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command in (None, "quickstart"):
        from .quickstart import run_quickstart

        run_quickstart(getattr(args, "output", "iris_nb_output"), seed=getattr(args, "seed", 0))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
