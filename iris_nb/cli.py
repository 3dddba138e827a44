"""The ``iris-nb`` command line: ``iris-nb quickstart``, ``iris-nb train --config run.yaml``.

``iris-nb train`` is also what every rank of a ``torchrun`` job runs::

    torchrun --nnodes 2 --nproc-per-node 4 ... -m iris_nb.cli train --config run.yaml
"""

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
    train = sub.add_parser("train", help="run a training described by a RunConfig YAML file (alone or under torchrun)")
    train.add_argument("--config", required=True, help="RunConfig YAML (or JSON) file")
    train.add_argument("--device", choices=("cpu", "cuda"), default=None,
                       help="training device (default: the config's, else CUDA when available)")
    train.add_argument("--no-resume", action="store_true",
                       help="do not continue <checkpoint_dir>/checkpoint.pt; if it exists the run stops with "
                            "an error instead of overwriting it")
    train.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                       help="progress display of rank 0: a tqdm bar (on a terminal; in a log file a plain line "
                            "every 10%% of the run), IRIS_PROGRESS JSON lines (what iris_nb.train.launch reads), "
                            "or none; auto: lines under launch, else a bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``iris-nb``; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command in (None, "quickstart"):
        from .quickstart import run_quickstart

        run_quickstart(getattr(args, "output", "iris_nb_output"), seed=getattr(args, "seed", 0))
        return 0
    if args.command == "train":
        from .train.launch import worker_main

        worker_main(args.config, device=args.device, resume=not args.no_resume, progress=args.progress)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
