"""Train the model that ships as ``iris_nb.pretrained("cmz-small")``.

Stages (each resumable; rerunning the script continues where it stopped):

1. training data: ``--n`` pairs on the SMALL grid from the default family (:func:`iris_nb.sim.make_cmz`
   observed by the 13CO(2-1) :class:`iris_nb.sim.LineObserver` with non-LTE escape-probability
   excitation), plus near- and far-side litter stores (disc, 3-kpc arm, bar x1 orbits and dust
   lanes; the near side absorbs);
2. training: a width-0.25 Reverter (~0.9 M parameters, 3.6 MB) with the SEDIGISM survey noise
   (0.9 K per 0.25 km/s channel, beam-correlated, fade) and litter, with the total-mass term in
   the loss (``scaled_density_mass``), through :func:`iris_nb.train.run_training` (the same code
   path as ``iris-nb train``);
3. testing on the held-out test split with :func:`iris_nb.train.test_reverter`; the metrics and
   the run configuration go into the model file's provenance and into
   ``benchmarks/results/pretrained_cmz_small.json``.

``--first-family`` reproduces the first shipped model's recipe (LTE observations, 1 K white
noise per pixel, the plain ScaledDensityLoss); the fields are still drawn from the current
``make_cmz``.

Usage::

    python scripts/train_pretrained.py --workdir /tmp/iris_pretrain            # everything
    python scripts/train_pretrained.py --workdir /tmp/iris_pretrain --stage data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import iris_nb
from iris_nb.grids import SMALL

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "iris_nb" / "model" / "weights" / "cmz-small.pt"
RESULTS = ROOT / "benchmarks" / "results" / "pretrained_cmz_small.json"


def make_data(workdir: Path, n: int, n_litter: int, workers: int, excitation: str = "escape") -> dict:
    """Write the CMZ store and the two litter stores; returns their paths."""
    from iris_nb.data import write_dataset
    from iris_nb.sim import LineObserver, far_side_litter, litter_grid, near_side_litter

    paths = {"cmz": workdir / "cmz_small.zarr", "near": workdir / "near_small.zarr", "far": workdir / "far_small.zarr"}
    write_dataset(paths["cmz"], n, SMALL, observer=LineObserver(SMALL, excitation=excitation), seed=2026, workers=workers)
    for side, model in (("near", near_side_litter), ("far", far_side_litter)):
        grid = litter_grid(SMALL, side)
        write_dataset(paths[side], n_litter, grid, model=model, observer=LineObserver(grid, excitation=excitation), seed=7, workers=workers)
    return paths


FIRST_NOISE = {"sigma": 1.0, "channel_width": "grid", "fade": True, "correlated_beam": False}
SURVEY_NOISE = {"sigma": 0.9, "channel_width": 0.25, "fade": True, "correlated_beam": True}


def train(workdir: Path, paths: dict, epochs: int, device: str = "cpu", width: float = 0.25,
          batch_size: int = 8, num_workers: int = 0, first_family: bool = False):
    """Train with run_training and return (model, run, result)."""
    from iris_nb.train import RunConfig, run_training

    run = RunConfig(
        dataset=str(paths["cmz"]),
        checkpoint_dir=str(workdir / "run"),
        width=width,
        noise=FIRST_NOISE if first_family else SURVEY_NOISE,
        litter={"paths": [str(paths["near"]), str(paths["far"])], "p": [0.3, 0.3]},
        training={"epochs": epochs, "batch_size": batch_size, "batches_per_update": 1, "lr": 1e-3,
                  "loss": "scaled_density" if first_family else "scaled_density_mass",
                  "num_workers": num_workers,
                  "milestones": [max(1, int(epochs * 0.6)), max(2, int(epochs * 0.75)), max(3, int(epochs * 0.9))],
                  "gamma": 0.5, "seed": 0},
        test_fraction=0.1,
    )
    result = run_training(run, device=device)
    return result.model, run, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="iris_pretrain", type=Path)
    parser.add_argument("--n", type=int, default=1536, help="CMZ training pairs")
    parser.add_argument("--n-litter", type=int, default=192, help="pairs per litter store")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="processes writing the stores")
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument("--width", type=float, default=0.25, help="Reverter channel multiplier")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader processes in training")
    parser.add_argument("--first-family", action="store_true",
                        help="the first shipped model's recipe: LTE, 1 K white noise, no mass term")
    parser.add_argument("--stage", choices=("data", "all"), default="all")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    excitation = "lte" if args.first_family else "escape"
    paths = make_data(args.workdir, args.n, args.n_litter, args.workers, excitation)
    print(f"data ready after {time.perf_counter() - start:.0f} s: {paths}")
    if args.stage == "data":
        return
    model, run, result = train(args.workdir, paths, args.epochs, args.device, args.width, args.batch,
                               args.loader_workers, args.first_family)
    print(f"trained after {time.perf_counter() - start:.0f} s")

    from iris_nb.data import PreObservedDataset
    from iris_nb.sim import Litter, Noise
    from iris_nb.train import test_reverter

    test = PreObservedDataset(paths["cmz"], split="test", validation_fraction=run.training.validation_fraction,
                              test_fraction=run.test_fraction, seed=run.training.effective_split_seed)
    train_split = PreObservedDataset(paths["cmz"], split="train", validation_fraction=run.training.validation_fraction,
                                     test_fraction=run.test_fraction, seed=run.training.effective_split_seed)
    metrics = {}
    trained_noise = Noise(**{**run.noise.to_dict(), "fade": False}, grid=SMALL)  # full survey noise, no fade
    for label, noise in (("noiseless", None), ("noise", trained_noise)):
        found = test_reverter(model, test, noise=noise, config=run.training, train_dataset=train_split,
                              device=args.device)
        metrics[label] = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
    print(json.dumps(metrics, indent=2))
    summary = {
        "training_script": "scripts/train_pretrained.py",
        "trained_on": f"{args.n} make_cmz fields observed with LineObserver 13CO(2-1) ({excitation}) on SMALL "
                      f"(test split {run.test_fraction:.0%} held out), noise {run.noise.to_dict()}, "
                      f"near/far litter p=0.3 each, loss {run.training.loss}",
        "device": args.device,
        "run": run.to_dict(),
        "test_metrics": metrics,
        "train_losses": list(result.train_losses),
        "validation_losses": list(result.validation_losses),
        "seconds": round(time.perf_counter() - start, 1),
        "iris_nb_version": iris_nb.__version__,
    }
    model.cpu().save(OUTPUT, provenance=summary)
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.1f} MB) and {RESULTS}")


if __name__ == "__main__":
    main()
