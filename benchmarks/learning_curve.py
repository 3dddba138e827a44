"""Learning curve of a Reverter trained on the package's own SMALL synthetic data (CPU).

Draws ``--n`` CMZ fields with :func:`iris_nb.sim.cmz.make_cmz`, observes them once with
``SimpleObserver`` (velocity-resolved H2 column, no store), holds out ``--test`` of them,
trains with ``train_reverter`` (validation split from the rest) and records, per epoch,
the training and validation ScaledDensityLoss, the learning rate and the seconds, plus the
final ``test_reverter`` metrics on the held-out fields.  Writes
``benchmarks/results/learning_curve_small.json`` and a PNG drawn with
:func:`iris_nb.plot.loss_curves`.

    python benchmarks/learning_curve.py                    # defaults: 1392 fields, 10 epochs, width 0.5
    python benchmarks/learning_curve.py --n 944            # the configuration of tests/train/test_quality.py
    python benchmarks/learning_curve.py --n 96 --epochs 4  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from iris_nb.data.field_datasets import GasModelDataset, observed_pairs
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter

RESULTS = Path(__file__).resolve().parent / "results"


def small_pairs(n: int, seed: int, device: str = "cpu", workers: int = 0, progress: bool = False):
    """``n`` make_cmz fields on SMALL (gas seeds from ``seed``) observed once with SimpleObserver,
    as in-memory pairs (observations in solMass s / (km pc2), targets in solMass / pc3)."""
    fields = GasModelDataset(SMALL, n=n, seed=seed)
    return observed_pairs(fields, SimpleObserver(SMALL), batch_size=16, device=device, num_workers=workers,
                          progress=progress)


def training_config(epochs: int, batch: int, lr: float, device: str = "cpu", scheduler: str = "multistep",
                    validation: float = 0.0, seed: int = 0) -> TrainingConfig:
    """The benchmarks' training setup: Adam, one update per batch, steps of 0.3 at 60% and 80%
    of the epochs (for ``scheduler="multistep"``), channels-last."""
    return TrainingConfig(epochs=epochs, batch_size=batch, batches_per_update=1, lr=lr, scheduler=scheduler,
                          milestones=(int(0.6 * epochs) or 1, int(0.8 * epochs) or 2), gamma=0.3,
                          validation_fraction=validation, seed=seed, device=device, channels_last=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1392, help="fields drawn (default %(default)s)")
    parser.add_argument("--test", type=int, default=48, help="fields held out for the test metrics")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=float, default=0.5, help="Reverter channel multiplier")
    parser.add_argument("--validation", type=float, default=0.0, help="validation fraction of the training fields")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "learning_curve_small.json"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    pairs = small_pairs(args.n, args.seed, progress=True)
    data_seconds = time.perf_counter() - start
    train = Subset(pairs, range(args.n - args.test))
    test = Subset(pairs, range(args.n - args.test, args.n))
    config = training_config(args.epochs, args.batch, args.lr, validation=args.validation, seed=args.seed)
    torch.manual_seed(args.seed)
    model = Reverter(SMALL, input_space="v_density", width=args.width)
    held_out = []

    def after_epoch(event, info):
        if event == "epoch_end":
            values = test_reverter(model, test, config=config, train_dataset=train)
            held_out.append({"loss_ratio": values["loss_ratio"], "correlation": values["correlation"]})
            model.train()

    result = train_reverter(model, train, config=config, callbacks=[after_epoch])
    metrics = test_reverter(model, test, config=config, train_dataset=train)
    scalars = {k: v for k, v in metrics.items() if not k.endswith("_map")}
    record = {
        "grid": "SMALL", "gas_model": "make_cmz (all parameters random)", "observer": "SimpleObserver",
        "n_fields": args.n, "n_test": args.test, "width": args.width, "data_seconds": data_seconds,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "config": config.to_dict(), "epochs": list(range(1, len(result.train_losses) + 1)),
        "train_losses": result.train_losses, "validation_losses": result.validation_losses,
        "learning_rates": result.learning_rates, "epoch_times": result.epoch_times,
        "held_out_per_epoch": held_out, "test_metrics": scalars,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    from iris_nb.plot import loss_curves

    validation = [v for v in result.validation_losses if v is not None and v == v] or None
    ax = loss_curves(result.train_losses, validation, result.learning_rates,
                     loss_label="ScaledDensityLoss")
    ax.set_title(f"SMALL, {args.n - args.test} fields, test loss/baseline {scalars['loss_ratio']:.2f}, "
                 f"r = {scalars['correlation']:.2f}", fontsize=9)
    ax.figure.savefig(output.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(json.dumps({k: record[k] for k in ("train_losses", "validation_losses", "test_metrics")}, indent=2))
    for epoch, values in enumerate(held_out, 1):
        print(f"epoch {epoch:2d}: train {result.train_losses[epoch - 1]:.4f}, held-out loss/baseline "
              f"{values['loss_ratio']:.3f}, correlation {values['correlation']:.3f}")
    print(f"data {data_seconds:.0f} s, training {sum(result.epoch_times):.0f} s; wrote {output}")
    return record


if __name__ == "__main__":
    main()
