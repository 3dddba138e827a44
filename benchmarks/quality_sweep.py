"""Which training configurations reach the issue-4 quality bar on SMALL synthetic data.

Draws ``--n`` CMZ fields with :func:`iris_nb.sim.cmz.make_cmz` once (``--workers`` processes),
observes them with ``SimpleObserver`` (as ``tests/train/test_quality.py`` does), holds out the
last ``--test`` fields, and trains one width-``w`` Reverter per configuration on the first
``n_train`` of the rest.  Each configuration's held-out ``test_reverter`` metrics (loss over the
constant mean-map baseline, correlation) and its number of sample passes (``n_train * epochs``,
what a CPU pays for) go into the JSON file.  On a GPU the whole sweep takes minutes; the same
configuration reaches the same numbers on a CPU, only slower.

    python benchmarks/quality_sweep.py --device cuda --workers 14
    python benchmarks/quality_sweep.py --n 400 --test 48 --configs 0 --minutes 5     # CPU look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter
from learning_curve import small_pairs, training_config

RESULTS = Path(__file__).resolve().parent / "results"

# (n_train, width, epochs, batch, lr, scheduler): the quality test's configuration first, then
# the same CPU budget spent differently, then more data.
CONFIGS = [
    (896, 0.5, 10, 16, 1e-3, "multistep"),
    (896, 0.5, 10, 16, 2e-3, "cosine"),
    (1344, 0.5, 10, 16, 1e-3, "multistep"),
    (1344, 0.5, 10, 16, 2e-3, "cosine"),
    (1344, 0.25, 10, 16, 2e-3, "cosine"),
    (2000, 0.5, 7, 16, 2e-3, "cosine"),
    (2000, 0.25, 7, 16, 2e-3, "cosine"),
    (2000, 0.5, 10, 16, 2e-3, "cosine"),
    (3000, 0.5, 5, 16, 2e-3, "cosine"),
    (3000, 0.5, 10, 16, 2e-3, "cosine"),
    (6000, 0.5, 10, 16, 2e-3, "cosine"),
    (3000, 0.5, 10, 16, 1e-3, "multistep"),
    (6000, 0.5, 10, 16, 1e-3, "multistep"),
    (6000, 0.25, 20, 16, 1e-3, "multistep"),
]


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6096, help="fields drawn, the test fields included")
    parser.add_argument("--test", type=int, default=96, help="held-out fields (the last ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="processes drawing the fields")
    parser.add_argument("--configs", type=int, nargs="*", default=None, help="indices into CONFIGS (default all)")
    parser.add_argument("--minutes", type=float, default=30.0, help="start no configuration after this")
    parser.add_argument("--output", default=str(RESULTS / "quality_sweep.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pairs = small_pairs(args.n, seed=2024, device=args.device, workers=args.workers)
    test = Subset(pairs, range(args.n - args.test, args.n))
    print(f"{args.n} fields drawn and observed in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    chosen = range(len(CONFIGS)) if args.configs is None else args.configs
    for index in chosen:
        n_train, width, epochs, batch, lr, scheduler = CONFIGS[index]
        if time.perf_counter() - start > 60 * args.minutes:
            break
        if n_train > args.n - args.test:
            continue
        train = Subset(pairs, range(n_train))
        config = training_config(epochs, batch, lr, args.device, scheduler)
        torch.manual_seed(0)
        model = Reverter(SMALL, input_space="v_density", width=width)
        result = train_reverter(model, train, config=config, progress=False)
        metrics = test_reverter(model, test, config=config, train_dataset=train)
        row = {"n_train": n_train, "width": width, "epochs": epochs, "batch": batch, "lr": lr,
               "scheduler": scheduler, "sample_passes": n_train * epochs,
               "train_seconds": round(sum(result.epoch_times), 1),
               "loss_ratio": metrics["loss_ratio"], "correlation": metrics["correlation"],
               "mass_error": metrics["mass_error"], "train_losses": result.train_losses}
        rows.append(row)
        print(f"n {n_train:5d} width {width} epochs {epochs:2d} batch {batch} lr {lr:g} {scheduler:9s}: "
              f"loss/baseline {row['loss_ratio']:.3f}, r {row['correlation']:.3f} "
              f"({row['train_seconds']:.0f} s)", flush=True)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"device": args.device, "n_test": args.test, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
