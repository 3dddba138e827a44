"""Training throughput: a plain loop against ``train_reverter``, and the loader against the step.

In one process, on the same data and starting weights, it times (samples/s over timed
batches after one warm-up batch, the variants interleaved over ``--repeats`` rounds and the
median kept):

    plain loop        a hand-written fp32 loop: DataLoader, forward, ScaledDensityLoss,
                      backward, Adam step; attention through nn.MultiheadAttention, no
                      channels-last (the reference's way)
    train_reverter    iris_nb's loop, fp32 (attention through scaled_dot_product_attention)
    + bf16            the same under bf16 autocast
    + channels_last   fp32 with channels-last layout
    + fp16            (CUDA only) fp16 autocast with gradient scaling

and the data side at the same batch size: seconds per batch to read pairs from a zarr store
(``PreObservedDataset``, 0 and 2 workers, in a uniform shuffle and in the chunk order that
``train_reverter`` uses), to draw fields with ``GasModelDataset`` and to observe them with
``SimpleObserver`` on the training device (training without a store), against the seconds
of one training step.

    python benchmarks/bench_training.py                               # SMALL on CPU
    python benchmarks/bench_training.py --grid SEDIGISM --batches 3 --repeats 1 --no-loader
    python benchmarks/bench_training.py --device cuda --grid SEDIGISM
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from iris_nb.grids import get_grid
from iris_nb.model import Reverter, set_fast_attention
from iris_nb.train.config import TrainingConfig
from iris_nb.train.loop import train_reverter
from iris_nb.train.losses import ScaledDensityLoss


def make_pairs(grid, n: int, seed: int = 0) -> TensorDataset:
    """Random non-negative pairs on ``grid``: observations (n, 1, lon, v), targets (n, 1, d, lon)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, grid.lon.steps, grid.velocity.steps, generator=gen)
    y = 3.0 * torch.rand(n, 1, grid.distance.steps, grid.lon.steps, generator=gen) ** 2
    return TensorDataset(x, y)


def plain_loop(model, data, batch_size: int, device) -> list[float]:
    """The reference-style loop; returns the time stamp after each batch."""
    set_fast_attention(model, False)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = ScaledDensityLoss(model)
    stamps = []
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=True):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x, reduce=False), y)
        loss.backward()
        optimizer.step()
        loss.item()  # wait for the device, as train_reverter does for its report
        stamps.append(time.perf_counter())
    return stamps


def iris_loop(model, data, batch_size: int, device, precision="fp32", channels_last=False) -> list[float]:
    """``train_reverter`` for one epoch; returns the time stamp after each batch."""
    stamps = []

    def clock(event, info):
        if event == "batch_end":
            stamps.append(time.perf_counter())

    config = TrainingConfig(epochs=1, batch_size=batch_size, batches_per_update=1, validation_fraction=0.0,
                            device=str(device), precision=precision, channels_last=channels_last)
    train_reverter(model, data, config=config, callbacks=[clock], progress=False)
    return stamps


def throughput(stamps: list[float], batch_size: int) -> float:
    """Samples per second between the first (warm-up) and the last batch."""
    return (len(stamps) - 1) * batch_size / (stamps[-1] - stamps[0])


def loader_seconds(grid, batch_size: int, batches: int, workdir: Path, device=None) -> dict:
    """Seconds per batch to read a store (0 and 2 workers), to draw fields and to observe them."""
    from iris_nb.data.datasets import PreObservedDataset
    from iris_nb.data.field_datasets import GasModelDataset
    from iris_nb.data.samplers import ChunkShuffleSampler
    from iris_nb.data.store import write_dataset
    from iris_nb.sim.columnize import columnize_tensors
    from iris_nb.sim.observers import SimpleObserver

    n = batch_size * batches
    start = time.perf_counter()
    write_dataset(workdir / "store", n, grid, seed=0, workers=min(8, os.cpu_count() or 1), progress=False)
    out = {"store_write_s_per_sample": (time.perf_counter() - start) / n}
    store = PreObservedDataset(workdir / "store", split="train", validation_fraction=0.0, test_fraction=0.0)
    out["store_chunk_size"] = store.chunk_size
    for workers in (0, 2):
        # a uniform shuffle (DataLoader(shuffle=True)) against the chunk order train_reverter uses
        for label, sampler in (("shuffled", torch.utils.data.RandomSampler(store)),
                               ("chunk_order", ChunkShuffleSampler(store, num_workers=workers, batch_size=batch_size))):
            loader = DataLoader(store, batch_size=batch_size, sampler=sampler, num_workers=workers)
            iterator = iter(loader)
            next(iterator)  # workers started, first batch read
            start = time.perf_counter()
            count = sum(1 for _ in iterator)
            out[f"store_read_s_per_batch_{label}_workers{workers}"] = (time.perf_counter() - start) / max(count, 1)
    fields = GasModelDataset(grid, n=batch_size * 2, seed=0)
    device = torch.device(device or "cpu")
    observer = SimpleObserver(grid).to(device)
    for batch in DataLoader(fields, batch_size=batch_size):  # the first batch warms up the observer
        start = time.perf_counter()
        with torch.no_grad():
            batch = {k: v.to(device) for k, v in batch.items()}
            observer(batch).mean(dim=2)
            columnize_tensors(batch).sum().item()
        observe = time.perf_counter() - start
    start = time.perf_counter()
    for _ in DataLoader(fields, batch_size=batch_size):
        pass
    out["fields_draw_s_per_batch_one_process"] = (time.perf_counter() - start) / 2
    out[f"fields_observe_s_per_batch_on_{device.type}"] = observe
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="SMALL", help="grid preset (default %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default %(default)s)")
    parser.add_argument("--batches", type=int, default=6, help="batches per timed run, 1 warm-up (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all variants (median kept)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader measurements")
    parser.add_argument("--loader-batches", type=int, default=16, help="batches in the store the loader reads")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    grid, device = get_grid(args.grid), torch.device(args.device)
    data = make_pairs(grid, args.batch * args.batches)
    torch.manual_seed(0)
    initial = Reverter(grid).state_dict()

    def fresh():
        model = Reverter(grid)
        model.load_state_dict(initial)
        return model

    variants = {
        "plain loop (fp32, MHA, no channels_last)": lambda: plain_loop(fresh(), data, args.batch, device),
        "train_reverter fp32": lambda: iris_loop(fresh(), data, args.batch, device),
        "train_reverter bf16 autocast": lambda: iris_loop(fresh(), data, args.batch, device, "bf16"),
        "train_reverter fp32 channels_last": lambda: iris_loop(fresh(), data, args.batch, device, channels_last=True),
    }
    if device.type == "cuda":
        variants["train_reverter fp16 autocast"] = lambda: iris_loop(fresh(), data, args.batch, device, "fp16")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            rates[name].append(throughput(run(), args.batch))
    results = {
        "grid": grid.name, "device": str(device), "batch_size": args.batch, "timed_batches": args.batches - 1,
        "repeats": args.repeats, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "samples_per_s": {name: statistics.median(values) for name, values in rates.items()},
        "samples_per_s_all": rates,
    }
    plain = results["samples_per_s"]["plain loop (fp32, MHA, no channels_last)"]
    step_s = args.batch / max(results["samples_per_s"].values())
    print(f"{grid.name} on {device}, batch {args.batch}, {args.batches - 1} timed batches x {args.repeats}")
    for name, value in results["samples_per_s"].items():
        print(f"  {name:42s} {value:8.2f} samples/s  ({value / plain:4.2f}x plain)")
    results["step_s_per_batch_best"] = step_s
    if not args.no_loader:
        with tempfile.TemporaryDirectory() as workdir:
            results["loader"] = loader_seconds(grid, args.batch, args.loader_batches, Path(workdir), device)
        print(f"  best training step: {step_s:.3f} s per batch of {args.batch}")
        for name, value in results["loader"].items():
            print(f"  {name:46s} {value:9.4f}" + ("" if name.endswith("chunk_size") else " s"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
