"""Continue training the shipped ``cmz-small`` on fresh fields of the default family, time-limited.

The shipped model saw 8000 stored fields (``scripts/train_pretrained.py``).  Here every batch is
a fresh set of gas fields drawn by :class:`~iris_nb.sim.CMZModel` and observed with the escape
``LineObserver`` on the training device (:class:`~iris_nb.data.FieldStream`, ``replay`` uses
each drawn batch that many times with new noise and litter), with the survey noise and the
near/far litter of the shipped recipe.  The run stops after ``--minutes`` and resumes from its
checkpoint when started again with the same arguments; the model is written to
``<workdir>/model.pt`` for ``benchmarks/evaluate_pretrained.py --model <workdir>/model.pt``.
The stream's seed (2027) gives gas seeds that neither the shipped model's store (2026) nor the
evaluation fields (plain seeds from 10 000 000) use.

::

    python scripts/finetune_pretrained.py --minutes 60 --workdir finetune     # CPU
    python scripts/finetune_pretrained.py --minutes 8 --device cuda --batch 32 --fields 100000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SURVEY_NOISE = {"sigma": 0.9, "channel_width": 0.25, "fade": True, "correlated_beam": True}
STREAM_SEED = 2027


def litter(workdir: Path, n: int, grid, device: str):
    """The near- and far-side litter stores of the shipped recipe (written once, then reused)."""
    from iris_nb.data import PreObservedDataset, write_dataset
    from iris_nb.sim import Litter, LineObserver, far_side_litter, litter_grid, near_side_litter

    parts = []
    for side, model in (("near", near_side_litter), ("far", far_side_litter)):
        side_grid = litter_grid(grid, side)
        path = write_dataset(workdir / f"{side}.zarr", n, side_grid, model=model, observer=LineObserver(side_grid),
                             seed=7, workers=0, progress=False)
        parts.append(PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0))
    return Litter(parts, p=[0.3, 0.3])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="finetune", type=Path)
    parser.add_argument("--model", default="cmz-small", help="shipped name or model file to start from")
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of this call")
    parser.add_argument("--fields", type=int, default=200_000, help="distinct fresh fields in the stream")
    parser.add_argument("--replay", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--n-litter", type=int, default=192)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import iris_nb
    from iris_nb.data import FieldStream
    from iris_nb.model import Reverter
    from iris_nb.sim import LineObserver, Noise
    from iris_nb.train import TrainingConfig, train_reverter

    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = iris_nb.pretrained(args.model) if not Path(args.model).exists() else Reverter.load(args.model)
    grid = model.grid
    stream = FieldStream(grid, n=args.fields, seed=STREAM_SEED, replay=args.replay)
    noise = Noise(**SURVEY_NOISE, grid=grid)
    config = TrainingConfig(epochs=1, batch_size=args.batch, batches_per_update=1, validation_fraction=0.0,
                            lr=args.lr, loss="scaled_density_mass", scheduler="constant", seed=0, device=args.device)
    deadline = time.perf_counter() + 60.0 * args.minutes

    def time_limit(event, info):
        return event == "batch_end" and time.perf_counter() > deadline

    result = train_reverter(model, stream, noise=noise, litter=litter(args.workdir, args.n_litter, grid, args.device),
                            observer=LineObserver(grid), config=config, checkpoint_dir=args.workdir / "run",
                            callbacks=[time_limit])
    history = result.history
    summary = {"start": args.model, "seconds_this_call": time.perf_counter() - start,
               "fields_drawn": history.get("fields_drawn"), "fields_reused": history.get("fields_reused"),
               "stopped_by_time": bool(result.stopped), "config": config.to_dict(), "args": vars(args) | {
                   "workdir": str(args.workdir)}}
    model.provenance = {**model.provenance, "finetune": summary}
    model.save(args.workdir / "model.pt")
    print(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
