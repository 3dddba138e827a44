"""One held-out comparison of the reversion methods: CNN, synthesis head, two-output CNN, RIM,
column consistency, ensemble.

Everything is trained and tested on the same data in one run: ``--train`` fields of the default
family (``CMZModel``, seed 11) and ``--test`` held-out fields (seed 12, never trained on), seen
by ``SimpleObserver`` ("vrho", where the 2-D forward model is exact and the column is known), as
in-memory pairs with density and velocity targets.  Rows:

    IRIS CNN               Reverter(grid, "vrho", width), density only
    + synthesis head       the same with head=["16-3-linear-relu", "16-3-residual-relu", "1-1-linear-none"]
    + column consistency   the IRIS CNN's maps rescaled per longitude to the PV's column
    two-output CNN         outputs=("density", "velocity")
    + RIM                  RIM(two-output CNN, steps) trained on top (the CNN frozen)
    ensemble of 3          the IRIS CNN and two more members (other seeds: initialisation, order)

With ``--snapshots k`` every row is also scored on ``k`` out-of-family fields: the barred-potential
gas on closed orbits of ``benchmarks/evaluate_pretrained.py`` (``barred_gas``), written as AREPO
snapshots and read back with ``from_arepo`` (``ood_*`` keys; the constant baseline is the in-family
training mean map).  ``--sweep-steps 1,2,5`` also trains RIMs with those numbers of steps on the
same CNN and reports quality against cost.

Columns: held-out loss / constant-baseline ratio, correlation (asinh space), mean |mass error|,
PV residual (``|pv - F(maps)|^2 / |pv|^2`` through the forward model, two-output models only),
spread-skill and 1-sigma coverage (ensemble), trainable parameters, images/s (inference, eval
mode, batch 16, same process).  No noise is added (vrho has no thermal noise model here).

    python benchmarks/compare_methods.py --json benchmarks/results/compare_methods_small_cpu.json
    python benchmarks/compare_methods.py --grid sedigism --device cuda --train 4000 --epochs 10   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from iris_nb.data import FieldStream
from iris_nb.data.field_datasets import InMemoryPairs, observed_pairs
from iris_nb.grids import get_grid
from iris_nb.model import RIM, Reverter
from iris_nb.model.consistency import reobserve
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter

HEAD = ["16-3-linear-relu", "16-3-residual-relu", "1-1-linear-none"]


def snapshot_pairs(grid, observer, count: int, particles: int) -> InMemoryPairs | None:
    """``count`` out-of-family fields (evaluate_pretrained's barred_gas snapshots) as pairs with velocity."""
    if count <= 0:
        return None
    import importlib.util
    import tempfile

    from iris_nb.sim.columnize import columnize_tensors, columnize_velocity_tensors
    from iris_nb.sim.fields import field_tensors

    spec = importlib.util.spec_from_file_location("evaluate_pretrained",
                                                  Path(__file__).resolve().parent / "evaluate_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    observations, targets = [], []
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        for seed in range(count):
            field, _ = module.snapshot_field(10_000 + seed, grid, folder, particles)
            tensors = field_tensors(field)
            observations.append(observer(tensors).mean(dim=2).unsqueeze(1))
            targets.append(torch.cat([columnize_tensors(tensors).unsqueeze(1),
                                      columnize_velocity_tensors(tensors).unsqueeze(1)], dim=1))
    units = {"observation": observer.units, "target": "solMass / pc3"}
    return InMemoryPairs(torch.cat(observations).float(), torch.cat(targets).float(), grid, units)


def density_only(pairs: InMemoryPairs) -> InMemoryPairs:
    return InMemoryPairs(pairs.tensors[0], pairs.tensors[1][:, :1].contiguous(), pairs.grid, pairs.units,
                         pairs.reduction)


def images_per_second(model, pv: torch.Tensor, device, repeats: int = 3) -> float:
    model.eval()
    pv = pv.to(device)
    with torch.no_grad():
        model(pv[:2], reduce=False)
        start = time.perf_counter()
        for _ in range(repeats):
            model(pv, reduce=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return repeats * pv.shape[0] / (time.perf_counter() - start)


def pv_residual(model, pairs: InMemoryPairs, device) -> float:
    model.eval()
    pv = pairs.tensors[0].to(device)
    with torch.no_grad():
        maps = model(pv, reduce=False)
        again = reobserve(model, maps, pv)
    return float((pv - again).square().sum() / pv.square().sum())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--test", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rim-epochs", type=int, default=3)
    parser.add_argument("--rim-steps", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--snapshots", type=int, default=0, help="out-of-family barred-potential fields")
    parser.add_argument("--particles", type=int, default=400_000)
    parser.add_argument("--sweep-steps", default="", help="comma-separated RIM step counts to compare")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    grid = get_grid(args.grid)
    observer = SimpleObserver(grid)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} cores, device {device}, grid {grid.name}, load average {load:.2f}",
          flush=True)
    train2 = observed_pairs(FieldStream(grid, n=args.train, seed=11), observer, velocity=True, batch_size=16,
                            device=device)
    test2 = observed_pairs(FieldStream(grid, n=args.test, seed=12), observer, velocity=True, batch_size=16,
                           device=device)
    train1, test1 = density_only(train2), density_only(test2)
    ood2 = snapshot_pairs(grid, observer, args.snapshots, args.particles)
    ood1 = density_only(ood2) if ood2 is not None else None
    data_seconds = time.perf_counter() - started
    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch, batches_per_update=1, device=str(device),
                            validation_fraction=0.0, milestones=(max(1, args.epochs * 6 // 10), max(2, args.epochs * 8 // 10)),
                            gamma=0.3, channels_last=True, seed=1)
    rows, seconds = {}, {}
    probe = test1.tensors[0][:16]

    def fit(name, model, data, cfg=config):
        start = time.perf_counter()
        train_reverter(model, data, config=cfg, progress=False)
        seconds[name] = time.perf_counter() - start
        print(f"  trained {name} in {seconds[name]:.0f} s", flush=True)
        return model

    def score(name, model, data, **kwargs):
        metrics = test_reverter(model, data, config=config, train_dataset=train1 if data is test1 else train2,
                                **kwargs)
        members = model if isinstance(model, list) else [model]
        row = {key: metrics.get(key) for key in ("loss_ratio", "correlation", "mass_error", "mass_bias",
                                                 "spread_skill", "coverage_1sigma", "velocity_rmse")}
        row["parameters"] = sum(m.num_parameters(trainable_only=False) for m in members)
        row["images_per_s"] = 1.0 / sum(1.0 / images_per_second(m, probe, device) for m in members)
        row["pv_residual"] = (pv_residual(members[0], test2, device)
                              if len(getattr(members[0], "outputs", ())) == 2 and len(members) == 1 else None)
        row["train_seconds"] = seconds.get(name, 0.0)
        if ood1 is not None:
            two_outputs = len(getattr(members[0], "outputs", ())) == 2
            ood = test_reverter(model, ood2 if two_outputs else ood1, config=config,
                                train_dataset=train2 if two_outputs else train1, **kwargs)
            for key in ("loss_ratio", "correlation", "mass_bias"):
                row[f"ood_{key}"] = ood[key]
            row["ood_pv_residual"] = (pv_residual(members[0], ood2, device)
                                      if two_outputs and len(members) == 1 else None)
        rows[name] = row
        print(f"  {name}: {json.dumps({k: v for k, v in row.items() if v is not None}, default=float)}", flush=True)

    torch.manual_seed(0)
    cnn = fit("IRIS CNN", Reverter(grid, input_space="v_density", width=args.width), train1)
    score("IRIS CNN", cnn, test1)
    torch.manual_seed(0)
    head = fit("+ synthesis head", Reverter(grid, input_space="v_density", width=args.width, head=HEAD), train1)
    score("+ synthesis head", head, test1)
    score("+ column consistency", cnn, test1, column_consistent=True)
    torch.manual_seed(0)
    two = fit("two-output CNN", Reverter(grid, input_space="v_density", width=args.width,
                                         outputs=("density", "velocity")), train2)
    score("two-output CNN", two, test2)
    rim = fit("+ RIM", RIM(two, steps=args.rim_steps, hidden=16), train2, config.replace(epochs=args.rim_epochs))
    score("+ RIM", rim, test2)
    sweep = {}
    for steps in [int(t) for t in args.sweep_steps.split(",") if t.strip()]:
        name = f"RIM T={steps}"
        model = fit(name, RIM(two, steps=steps, hidden=16), train2, config.replace(epochs=args.rim_epochs))
        metrics = test_reverter(model, test2, config=config, train_dataset=train2)
        sweep[steps] = {"loss_ratio": metrics["loss_ratio"], "correlation": metrics["correlation"],
                        "mass_bias": metrics["mass_bias"], "pv_residual": pv_residual(model, test2, device),
                        "images_per_s": images_per_second(model, probe, device), "train_seconds": seconds[name]}
        print(f"  {name}: {json.dumps(sweep[steps])}", flush=True)
    members = [cnn]
    for seed in (2, 3):
        torch.manual_seed(seed)
        members.append(fit(f"member seed {seed}", Reverter(grid, input_space="v_density", width=args.width), train1,
                           config.replace(seed=seed)))
    score("ensemble of 3", members, test1)
    rows["ensemble of 3"]["train_seconds"] = seconds["IRIS CNN"] + seconds["member seed 2"] + seconds["member seed 3"]
    rows["+ RIM"]["train_seconds"] += seconds["two-output CNN"]
    rows["+ column consistency"]["train_seconds"] = seconds["IRIS CNN"]

    result = {"grid": grid.name, "device": str(device), "train_fields": args.train, "test_fields": args.test,
              "epochs": args.epochs, "rim_epochs": args.rim_epochs, "rim_steps": args.rim_steps, "width": args.width,
              "observer": "SimpleObserver (vrho)", "load_average_before": load,
              "load_average_after": os.getloadavg()[0], "data_seconds": data_seconds,
              "seconds_total": time.perf_counter() - started, "rows": rows, "rim_step_sweep": sweep,
              "snapshots": args.snapshots}
    print("\n| method | loss / baseline | correlation | mass error | PV residual | spread-skill | parameters | "
          "images/s |\n|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        def fmt(value, pattern):
            return "—" if value is None else pattern.format(value)
        print(f"| {name} | {row['loss_ratio']:.3f} | {row['correlation']:.3f} | {row['mass_error']:.1%} | "
              f"{fmt(row['pv_residual'], '{:.3f}')} | {fmt(row['spread_skill'], '{:.2f}')} | "
              f"{row['parameters']:,} | {row['images_per_s']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
