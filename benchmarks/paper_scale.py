"""Paper scale on one device: how fast the data engine and training are, then the best model in a time budget.

One script, sized to a lent GPU's short budget (about 15 minutes per task, all tries
together).  In order, each part timed and its peak device memory reported:

1. **gas**: ``CMZModel(grid).sample`` fields/s at batch 1 and 2 on the device (and one numpy
   ``make_cmz`` field on the CPU, the baseline);
2. **pairs**: draw + observe with the escape-probability ``LineObserver`` (the default family)
   and the model's latitude mean, pairs/s;
3. **training step**: samples/s of a ``Reverter`` step at ``--batch`` on random pairs, variant by
   variant: fp32, bf16, bf16 + channels-last, + fused Adam, + ``torch.compile`` (skipped with
   ``--no-compile``; its compile time is reported apart);
4. **extrapolation** to the paper's scale (100k pairs, 32 epochs);
5. **training**: ``train_reverter`` on a :class:`~iris_nb.data.stream.FieldStream` of fresh
   default-family fields drawn and observed on the device, survey noise, bf16 and
   channels-last, ``replay`` chosen from the measured rates so the step never waits for data,
   stopped after ``--minutes`` by a callback (with a checkpoint: the same command continues
   it);
6. **held-out test**: ``test_reverter`` on ``--test-fields`` fields of another seed, which the
   model never saw (loss / constant-baseline ratio, correlation, mass error); with ``--ship``
   and the issue's bar met (ratio <= 0.5, r >= 0.85, <= 15 MB in half precision) the weights
   are written as ``cmz-sedigism.pt`` for ``iris_nb.pretrained``.

Everything goes to ``--out`` (JSON, checkpoint, model).  Commands::

    python benchmarks/paper_scale.py --device cuda --minutes 8 --out $OUT --ship      # the GPU run
    python benchmarks/paper_scale.py --device cpu --grid small --minutes 0.5 --test-fields 4 \\
        --batch 4 --no-compile --out /tmp/paper_scale_smoke                          # code-path check on a CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from iris_nb.data.stream import FieldStream
from iris_nb.grids import get_grid
from iris_nb.model import Reverter
from iris_nb.sim import CMZModel, LineObserver, Noise, make_cmz
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter
from iris_nb.train.losses import ScaledDensityLoss

PAPER_PAIRS, PAPER_EPOCHS = 100_000, 32
SHIP_BAR = {"loss_ratio": 0.5, "correlation": 0.85, "megabytes": 15.0}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device):
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _timed(fn, device, repeats: int):
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_data(grid, device, repeats: int, observer) -> dict:
    gas = CMZModel(grid)
    out = {}
    seed = iter(range(10**6, 2 * 10**6))
    for batch in (1, 2):
        try:
            _reset_peak(device)
            seconds = _timed(lambda: gas.sample([next(seed) for _ in range(batch)], device=device), device, repeats)
            out[f"gas_batch{batch}"] = {"fields_per_s": batch / seconds, "peak_bytes": _peak(device)}

            def pair():
                fields = gas.sample([next(seed) for _ in range(batch)], device=device)
                with torch.no_grad():
                    return observer(fields).mean(dim=2)

            _reset_peak(device)
            seconds = _timed(pair, device, repeats)
            out[f"pairs_batch{batch}"] = {"pairs_per_s": batch / seconds, "peak_bytes": _peak(device)}
        except torch.cuda.OutOfMemoryError as err:  # a batch too big is a result, not a failure
            out[f"batch{batch}_error"] = str(err).splitlines()[0]
            torch.cuda.empty_cache()
    start = time.perf_counter()
    make_cmz(grid, seed=1)
    out["numpy_make_cmz_seconds_per_field_cpu"] = time.perf_counter() - start
    return out


def measure_steps(grid, device, batch: int, width: float, steps: int, compile_model: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, grid.lon.steps, grid.velocity.steps, generator=gen).to(device)
    y = (3 * torch.rand(batch, 1, grid.distance.steps, grid.lon.steps, generator=gen) ** 2).to(device)
    variants = [("fp32", None, False, False, False), ("bf16", torch.bfloat16, False, False, False),
                ("bf16+channels_last", torch.bfloat16, True, False, False),
                ("bf16+channels_last+fused_adam", torch.bfloat16, True, True, False)]
    if compile_model:
        variants.append(("bf16+channels_last+fused_adam+compile", torch.bfloat16, True, True, True))
    out = {}
    for name, dtype, channels_last, fused, compiled in variants:
        out[name] = _step_rate(grid, device, x, y, batch, width, steps, dtype, channels_last, fused, compiled)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _step_rate(grid, device, x, y, batch, width, steps, dtype, channels_last, fused, compiled) -> dict:
    """Samples/s of one training-step variant (and its peak memory, compile time)."""
    torch.manual_seed(0)
    model = Reverter(grid, width=width).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused and device.type == "cuda")
    loss_fn = ScaledDensityLoss(model)
    net = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            prediction = net(inputs, reduce=False)
        loss_fn(prediction.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        compile_seconds = None
        if compiled:
            start = time.perf_counter()
            step()
            _sync(device)
            compile_seconds = time.perf_counter() - start
        _reset_peak(device)
        seconds = _timed(step, device, steps)
        return {"samples_per_s": batch / seconds, "peak_bytes": _peak(device), "compile_seconds": compile_seconds}
    except Exception as err:  # noqa: BLE001 - a variant that does not run here is reported, not fatal
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--grid", default="sedigism")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.5, help="Reverter width (0.5: ~15 MB in half precision)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-fields", type=int, default=32)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ship", action="store_true", help="write cmz-sedigism.pt when the bar is met")
    parser.add_argument("--out", type=Path, default=Path("paper_scale_out"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    grid = get_grid(args.grid)
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
              "grid": grid.name, "batch": args.batch, "width": args.width, "torch": torch.__version__,
              "load_average": os.getloadavg()[0], "cpu_threads": torch.get_num_threads()}

    def save():
        report["seconds_total"] = time.perf_counter() - started
        (args.out / "paper_scale.json").write_text(json.dumps(report, indent=2, default=str))

    observer = LineObserver(grid).to(device)
    print("1-2. data engine ...", flush=True)
    report["data"] = measure_data(grid, device, args.repeats, observer)
    save()
    print(json.dumps(report["data"], indent=1), flush=True)
    print("3. training step variants ...", flush=True)
    report["steps"] = measure_steps(grid, device, args.batch, args.width, max(3, args.repeats), not args.no_compile)
    save()
    print(json.dumps(report["steps"], indent=1), flush=True)

    pairs = max((v.get("pairs_per_s", 0.0) for k, v in report["data"].items() if k.startswith("pairs")), default=0.0)
    best_step = max((v.get("samples_per_s", 0.0) for v in report["steps"].values()), default=0.0)
    eager = report["steps"].get("bf16+channels_last+fused_adam", {}).get("samples_per_s") or best_step
    report["paper_scale"] = {
        "pairs_per_s": pairs, "training_samples_per_s_best": best_step,
        "hours_to_draw_100k_pairs": PAPER_PAIRS / pairs / 3600 if pairs else None,
        "hours_for_32_epochs_of_100k": PAPER_PAIRS * PAPER_EPOCHS / best_step / 3600 if best_step else None,
        "hours_for_32_epochs_on_the_fly_fresh_fields": (PAPER_PAIRS * PAPER_EPOCHS / min(pairs, eager) / 3600
                                                        if pairs and eager else None),
    }
    # replay so that one fresh batch covers the steps it feeds: draw time / step time, rounded up
    replay = max(1, math.ceil(eager / pairs)) if pairs and eager else 1
    report["replay"] = replay
    save()

    budget = args.minutes * 60.0
    per_second = min(eager, pairs * replay) if pairs else eager
    n_fields = max(args.batch * 2, int(per_second * budget / replay * 1.2))
    settings = args.out / "stream.json"  # a continued run keeps the stream it started with
    if settings.is_file():
        kept = json.loads(settings.read_text())
        n_fields, replay = int(kept["n_fields"]), int(kept["replay"])
    else:
        settings.write_text(json.dumps({"n_fields": n_fields, "replay": replay}))
    report["stream"] = {"n_fields": n_fields, "replay": replay, "seed": 2026}
    stream = FieldStream(grid, n=n_fields, seed=2026, replay=replay)
    print(f"5. training for {args.minutes} min on {n_fields} fresh fields (replay {replay}) ...", flush=True)
    noise = Noise(grid=grid)
    torch.manual_seed(0)
    model = Reverter(grid, width=args.width)
    config = TrainingConfig(epochs=1, batch_size=args.batch, batches_per_update=1, lr=args.lr, precision="bf16",
                            channels_last=True,
                            validation_fraction=0.0, device=str(device), seed=3, checkpoint_every=1)
    stop_at = time.perf_counter() + budget

    recent = []

    def clock(event, info):
        if event == "batch_end":
            recent[:] = (recent + [info["loss"]])[-20:]
        return event == "batch_end" and time.perf_counter() > stop_at

    start = time.perf_counter()
    result = train_reverter(model, stream, noise=noise, observer=observer, config=config,
                            checkpoint_dir=args.out / "run", callbacks=[clock], progress=False)
    seconds = time.perf_counter() - start
    h = result.history
    report["training"] = {"seconds": seconds, "samples_seen": h["samples_seen"], "fields_drawn": h["fields_drawn"],
                          "fields_reused": h["fields_reused"], "samples_per_s": h["samples_seen"] / seconds,
                          "stopped_by_clock": result.stopped, "peak_bytes": result.peak_memory,
                          "mean_of_last_20_batch_losses": statistics.fmean(recent) if recent else None,
                          "continue_with": "the same command (the run resumes from --out/run)"}
    save()

    print(f"6. held-out test on {args.test_fields} fields never seen ...", flush=True)
    model.eval()
    held_out = FieldStream(grid, n=args.test_fields, seed=777_777)
    metrics = test_reverter(model, held_out, noise=noise, observer=observer, config=config.replace(batch_size=2))
    megabytes = sum(p.numel() for p in model.state_dict().values()) * 2 / 2**20
    report["held_out"] = {k: metrics[k] for k in ("loss_ratio", "correlation", "mass_error", "mass_bias", "n_samples")}
    report["held_out"]["megabytes_half_precision"] = megabytes
    passed = (metrics["loss_ratio"] <= SHIP_BAR["loss_ratio"] and metrics["correlation"] >= SHIP_BAR["correlation"]
              and megabytes <= SHIP_BAR["megabytes"])
    report["meets_bar"] = passed
    if args.ship and passed:
        model.half()
        model.save(args.out / "cmz-sedigism.pt", provenance={"paper_scale": report})
        model.float()
        report["shipped"] = str(args.out / "cmz-sedigism.pt")
    save()
    print(json.dumps({k: report[k] for k in ("paper_scale", "training", "held_out", "meets_bar")}, indent=1,
                     default=str))
    return report


if __name__ == "__main__":
    main()
