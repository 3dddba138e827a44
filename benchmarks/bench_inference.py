"""Reverter inference speed: the plain reference path against iris_nb's optimised copy.

Runs, in one process and on the same random weights and inputs, a chain of variants, each
adding one optimisation to the one before:

    baseline          eval, torch.no_grad(), attention through nn.MultiheadAttention
    +fast attention   scaled_dot_product_attention on the same weights
    +fold BN          BatchNorm folded into the preceding (transpose) convolution
    +GEMM/sub-pixel   bottleneck convolutions as matrix products, last few-channel
                      transpose convolutions as conv3x3 + pixel shuffle
    +channels_last    channels-last weights and activations
    +inference_mode   torch.inference_mode() instead of torch.no_grad()  (= the default
                      optimize_for_inference copy under inference_mode)
    +in-place act.    LeakyReLU / ReLU overwrite their input (not on by default)
    +compile          torch.compile of encoder and decoder instead of in-place activations
                      (only with --compile)

and on CUDA additionally bf16 and fp16 autocast on the optimised copy.  For each it prints
images/s (median over --repeats timed runs after warm-up, the variants interleaved), the
peak tensor memory allocated during one forward pass (CPU: from the profiler's allocation
records; CUDA: torch.cuda.max_memory_allocated) and the largest deviation from the baseline output relative to the baseline's largest
value.  The network is timed on PV images (B, 1, N, N); the latitude reduction is left out.

    python benchmarks/bench_inference.py                      # 512, batch 8, CPU
    python benchmarks/bench_inference.py --size 128 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from iris_nb.grids import SEDIGISM
from iris_nb.model import Reverter, optimize_for_inference, set_fast_attention


def grid_for(size: int):
    return SEDIGISM.replace(
        distance=SEDIGISM.distance.with_steps(size), lon=SEDIGISM.lon.with_steps(size),
        lat=SEDIGISM.lat.with_steps(max(1, size // 4)), velocity=SEDIGISM.velocity.with_steps(size),
        name=f"SEDIGISM@{size}",
    )


def randomised_model(size: int, seed: int = 0) -> Reverter:
    """A Reverter with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = Reverter(grid_for(size))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.decoder[-2].bias.fill_(0.5)  # keep the output away from an all-zero ReLU
    return model.eval()


class PeakMemory:
    """Peak tensor memory (bytes) allocated by the code inside the ``with`` block.

    CUDA: ``torch.cuda.max_memory_allocated`` above the level at entry.  CPU: the largest
    sum of live allocations made inside the block, from the profiler's allocation records
    (malloc's own caching makes the process's resident size useless for this).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                   profile_memory=True)
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
            return False
        self.profiler.__exit__(*exc)
        try:
            events = self.profiler.profiler.kineto_results.events()
            changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        except AttributeError:  # profiler internals moved: report nothing rather than a wrong number
            self.peak = float("nan")
            return False
        live = peak = 0
        for _, nbytes in changes:
            live += nbytes
            peak = max(peak, live)
        self.peak = peak
        return False


def runner(model, inputs, context, device, autocast_dtype=None):
    """A function running one forward pass of a variant (synchronised on CUDA)."""
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())

    def run():
        with context(), amp:
            out = model(inputs, reduce=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def measure(runs: dict, warmup: int, repeats: int, device) -> dict:
    """Output and peak memory of each variant (one run after warm-up), then median seconds per
    batch over ``repeats`` interleaved rounds (every variant once per round), so that a
    change in machine load affects all variants alike."""
    results = {}
    for name, run in runs.items():
        for _ in range(warmup):
            run()
        with PeakMemory(device) as memory:
            out = run()
        results[name] = {"peak": memory.peak, "out": out.float(), "times": []}
        del out
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            results[name]["times"].append(time.perf_counter() - start)
    for name, result in results.items():
        result["seconds"] = statistics.median(result["times"])
        print(f"  measured {name:<18} {result['seconds'] * 1e3:9.1f} ms/batch", file=sys.stderr, flush=True)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="pixels N of the N x N PV image")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    base = randomised_model(args.size).to(device)
    set_fast_attention(base, False)
    inputs = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(1)) * 3
    inputs = inputs.to(device)

    steps = [  # (name, options added to optimize_for_inference, context)
        ("+fast attention", {}, torch.no_grad),
        ("+fold BN", {"fold_batch_norms": True}, torch.no_grad),
        ("+GEMM/sub-pixel", {"rewrite_layers": True}, torch.no_grad),
        ("+channels_last", {"channels_last": True}, torch.no_grad),
        ("+inference_mode", {}, torch.inference_mode),
        ("+in-place act.", {"inplace_activations": True}, torch.inference_mode),
    ]
    if args.compile:
        steps.append(("+compile", {"inplace_activations": False, "compile": True}, torch.inference_mode))
    options = {"fast_attention": True, "fold_batch_norms": False, "rewrite_layers": False,
               "inplace_activations": False, "channels_last": False}
    variants = [("baseline", base, torch.no_grad, None)]
    for name, added, context in steps:
        options.update(added)
        variants.append((name, optimize_for_inference(base, **options), context, None))
    if device.type == "cuda":
        fast = optimize_for_inference(base)
        variants += [("bf16 autocast", fast, torch.inference_mode, torch.bfloat16),
                     ("fp16 autocast", fast, torch.inference_mode, torch.float16)]

    runs = {name: runner(model, inputs, context, device, dtype) for name, model, context, dtype in variants}
    results = measure(runs, args.warmup, args.repeats, device)
    reference = results["baseline"]["out"]
    scale = reference.abs().max().item()
    rows = [{
        "variant": name,
        "ms_per_batch": result["seconds"] * 1e3,
        "images_per_s": args.batch / result["seconds"],
        "peak_memory_mib": result["peak"] / 2**20,
        "max_abs_diff_rel": (result["out"] - reference).abs().max().item() / scale,
    } for name, result in results.items()]

    base_rate = rows[0]["images_per_s"]
    print(f"\nReverter inference, N={args.size}, batch {args.batch}, {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, {args.repeats} repeats (median)")
    print(f"{'variant':<18} {'ms/batch':>9} {'images/s':>9} {'vs base':>8} {'vs prev':>8} "
          f"{'peak MiB':>9} {'max|diff|/max':>14}")
    previous = base_rate
    for row in rows:
        row["speedup"] = row["images_per_s"] / base_rate
        row["step_gain"] = row["images_per_s"] / previous
        previous = row["images_per_s"]
        print(f"{row['variant']:<18} {row['ms_per_batch']:9.1f} {row['images_per_s']:9.2f} "
              f"{row['speedup']:7.2f}x {row['step_gain']:7.2f}x {row['peak_memory_mib']:9.1f} "
              f"{row['max_abs_diff_rel']:14.2e}")
    exact = [r for r in rows if "autocast" not in r["variant"]]
    default = next(r for r in rows if r["variant"] == "+inference_mode")
    worst_diff = max(r["max_abs_diff_rel"] for r in exact)
    print(f"optimize_for_inference(model) under torch.inference_mode: {default['speedup']:.2f}x the baseline "
          f"({default['images_per_s']:.1f} vs {base_rate:.1f} images/s); largest relative deviation of any "
          f"float32 variant {worst_diff:.1e} ({'OK' if worst_diff < 1e-4 else 'TOO LARGE'} against 1e-4)")
    result = {
        "size": args.size, "batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats, "warmup": args.warmup, "variants": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
