"""``train_reverter``: supervised training of a Reverter that survives interruption.

One call trains in a notebook (CPU or one GPU) or inside each process of a ``torchrun``
job whose group :func:`~iris_nb.train.distributed.init_from_env` set up; the code path is
the same, with a world of one in the first case:

* the training order comes from a ``DistributedSampler`` (seeded, ``set_epoch`` every
  epoch; ``num_replicas=1`` alone), so 2 ranks with batch ``b`` see exactly the samples of
  one process with batch ``2 b``; for a store (items with ``chunk_ids``) a strided
  :class:`~iris_nb.data.samplers.ChunkShuffleSampler` does the same chunk by chunk, since a
  uniform shuffle would decode a whole chunk for nearly every sample;
* gradients of ``batches_per_update`` consecutive batches are *averaged* (each batch loss
  is divided by the size of its group, including a short last group of the epoch) before
  one optimiser step; the scheduler steps once per epoch; validation runs every epoch;
* under DDP batch norms are synchronised (:mod:`~iris_nb.train.sync_batch_norm`), gradients
  all-reduced, losses all-reduced for reporting, and only rank 0 calls callbacks, shows the
  progress bar and writes files.

The first :data:`STATISTICS_SAMPLES` training inputs, as the network sees them (after litter
and noise), are summarised by an :class:`~iris_nb.model.input_statistics.InputStatisticsRecorder`
into ``model.input_statistics``, which ``model.pt`` stores and ``revert`` checks cubes against
(on several processes, rank 0's own samples).

Checkpoints (:mod:`~iris_nb.train.resume`) are written atomically after every
``checkpoint_every`` epochs, at the end, and when a callback asks to stop (then inside the
epoch, with the accumulated gradients of an unfinished group), so ``resume=True`` continues
to the same weights and losses as an uninterrupted run.  An interrupt from the keyboard
(or a killed process) loses the work since the last checkpoint; stop through a callback to
keep it.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time

import torch
from torch.utils.data import DataLoader

from . import resume as ckpt
from ..data.stream import find_stream
from ..model.input_statistics import InputStatisticsRecorder
from .batches import (BatchPreparer, IndexList, batch_generator, inspect_dataset, n_batches, split_dataset,
                      training_sampler)
from .config import TrainingConfig, as_config
from .distributed import (all_reduce_sum, barrier, broadcast_flag, env_world_size, init_from_env, is_distributed,
                          no_buffer_broadcast, rank, resolve_device, world_size)
from .evaluate import validation_loss
from .losses import make_loss
from .progress import check_callbacks, progress_bar
from .result import TrainingResult
from .sync_batch_norm import convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["train_reverter", "STATISTICS_SAMPLES"]

STATISTICS_SAMPLES = 512
"""How many training inputs (the first ones seen) ``model.input_statistics`` summarises."""


def train_reverter(model, dataset, noise=None, litter=None, observer=None, config: TrainingConfig | None = None,
                   checkpoint_dir=None, resume: bool = True, callbacks=(), *, validation=None,
                   progress: bool = True) -> TrainingResult:
    """Train ``model`` on ``dataset``; return a :class:`~iris_nb.train.result.TrainingResult`.

    Parameters
    ----------
    model:
        A :class:`~iris_nb.model.Reverter`; trained in place (inputs ``(B, 1, lon, v)`` in
        its input unit, outputs ``(B, 1, distance, lon)`` in its density unit).  Its
        ``input_statistics`` are replaced by those of the first 512 training inputs.
    dataset:
        Either observed pairs, items ``(observation (1, lon, v), target (1, distance, lon))``
        float32 in the model's units, or physical fields, items dicts of
        ``(distance, lon, lat)`` tensors (e.g. :class:`~iris_nb.data.field_datasets.GasModelDataset`),
        observed batch by batch on the training device by ``observer``, or a
        :class:`~iris_nb.data.stream.FieldStream`, whose fields are also drawn on the training
        device (split into training and validation fields by field; ``replay`` > 1 reuses
        each fresh batch that many times in a row).
    noise, litter:
        Optional ``Noise``/``Litter`` modules applied to the inputs (PV images) only.
    observer:
        Observer module for field datasets (``SimpleObserver``, ``LineObserver``).
    config:
        :class:`~iris_nb.train.config.TrainingConfig` (paper defaults when ``None``).
    checkpoint_dir:
        Folder for ``checkpoint.pt`` (full training state) and ``model.pt``
        (``Reverter.save`` file); ``None`` writes nothing.
    resume:
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists (it must come from the
        same model and a compatible config).  ``False`` with an existing checkpoint is
        refused (nothing is overwritten); choose another folder or delete the file.
    callbacks:
        Callables ``cb(event, info) -> bool | None`` with events ``"train_begin"``,
        ``"batch_end"`` (epoch, batch, n_batches, loss, lr), ``"epoch_end"`` (epoch,
        train_loss, validation_loss, lr, seconds) and ``"train_end"`` (the result dict).
        Returning ``True`` stops cleanly after the current batch with a checkpoint.
    validation:
        A validation dataset of the same kind; when given, ``dataset`` is not split.
    progress:
        Show a tqdm progress bar (rank 0 only).
    """
    config = as_config(config)
    callbacks = check_callbacks(callbacks)
    _check_model(model)
    if env_world_size() > 1 and not is_distributed():
        init_from_env(config.device)  # started by torchrun without init_from_env: join the group now
    device = resolve_device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (gradient scaling), training runs on {device}; "
                         "use precision='bf16' or 'fp32' on CPU")
    kind = inspect_dataset(dataset, model, observer)
    if kind == "stream":  # a batch of fresh fields must fit on the device: say so before any work
        find_stream(dataset).model.check_memory(config.batch_size, device)
    if validation is not None:
        if inspect_dataset(validation, model, observer, what="validation dataset") != kind:
            raise ValueError("dataset and validation= hold different kinds of items (pairs vs fields); "
                             "use the same kind")
        train_set, val_set = dataset, validation
    else:
        train_set, val_set = split_dataset(dataset, config.validation_fraction, config.effective_split_seed)
    if len(train_set) < world_size():
        raise ValueError(f"{len(train_set)} training samples cannot be shared by {world_size()} processes; "
                         "use more samples or fewer processes")
    folder, state = ckpt.open_checkpoint(checkpoint_dir, resume, model, config)
    trainer = _Trainer(model, train_set, val_set, kind, dict(noise=noise, litter=litter, observer=observer),
                       config, device, folder, state, callbacks, progress)
    return trainer.fit()


def _check_model(model) -> None:
    """Refuse anything but a trainable Reverter."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "grid") or not hasattr(model, "input_scale"):
        raise TypeError(f"train_reverter needs an iris_nb Reverter, got {type(model).__name__}")
    if getattr(model, "inference_only", False):
        raise TypeError("this model was made by optimize_for_inference and cannot be trained; train the original")


class _Trainer:
    def __init__(self, model, train_set, val_set, kind, augment, config, device, folder, state, callbacks, progress):
        self.model, self.config, self.device, self.folder = model, config, device, folder
        self.callbacks, self.progress = callbacks, progress
        self.world, self.rank, self.distributed = world_size(), rank(), is_distributed()
        self.main = self.rank == 0
        self.comm = device if (self.distributed and device.type == "cuda") else torch.device("cpu")
        model.to(device)
        self._restore_channels_last = config.channels_last and not getattr(model, "channels_last", False)
        if config.channels_last:
            model.channels_last = True  # for the run only: fit() gives the model back as it came
        if state is not None:
            model.load_state_dict(state["model"])
        self.net = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            convert_sync_batchnorm(model, device)
            # batch-norm statistics stay equal through the synchronised norms: no buffer broadcast per step
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               **no_buffer_broadcast())
        self.optimizer = config.make_optimizer(model.parameters())
        self.scheduler = config.make_scheduler(self.optimizer)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        self.loss_fn = make_loss(config.loss, model, config.density_normalization)
        self.prepare = BatchPreparer(model, kind, device, dataset=train_set, **augment)
        if val_set is not None and kind == "pairs":
            val_scales = BatchPreparer(model, kind, device, dataset=val_set)
            if (val_scales.input_scale, val_scales.density_scale) != (self.prepare.input_scale,
                                                                      self.prepare.density_scale):
                raise ValueError("the validation dataset declares other units than the training dataset; "
                                 "give both in the same units")
        self.sampler = training_sampler(train_set, kind, config, self.world, self.rank)
        self.order = IndexList()
        pin = device.type == "cuda"
        workers = dict(num_workers=config.num_workers, persistent_workers=config.num_workers > 0, pin_memory=pin)
        self.loader = DataLoader(train_set, batch_size=config.batch_size, sampler=self.order,
                                 generator=torch.Generator().manual_seed(config.seed), **workers)
        self.val_loader = None
        if val_set is not None:
            shard = torch.utils.data.Subset(val_set, list(range(self.rank, len(val_set), self.world)))
            self.val_loader = DataLoader(shard, batch_size=config.batch_size, shuffle=False, **workers)
        self.n_batches = n_batches(len(self.sampler), config.batch_size)
        self.n_train, self.n_val = len(train_set), (len(val_set) if val_set is not None else 0)
        self.history = {"train_losses": [], "validation_losses": [], "learning_rates": [], "epoch_times": [],
                        "batch_losses": [], "updates": 0, "samples_seen": 0, "world_size": self.world,
                        "fields_drawn": 0, "fields_reused": 0}
        self.start_epoch = self.start_batch = 0
        self.recorder = InputStatisticsRecorder(model.grid, limit=STATISTICS_SAMPLES)
        self.pending, self.partial = None, None
        self.stop_requested = False
        if state is not None:
            self._restore(state)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    # ------------------------------------------------------------------ state
    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.history = state["history"]
        self.start_epoch, self.start_batch = int(state["epoch"]), int(state["batch"])
        self.pending, self.partial = state.get("pending_gradients"), state.get("epoch_partial")
        self.recorder.load_state_dict(state.get("input_statistics"))
        if self.start_epoch > self.config.epochs:
            raise ValueError(f"the checkpoint already holds {self.start_epoch} epochs, more than epochs="
                             f"{self.config.epochs}; raise epochs or use another checkpoint_dir")
        if int(state.get("world_size", 1)) != self.world and self.start_batch:
            raise ValueError(f"the checkpoint was stopped inside an epoch with {state.get('world_size')} processes; "
                             f"resume it with the same number of processes (now {self.world})")

    def _save(self, epoch: int, batch: int, partial: dict | None) -> None:
        pending = None
        if batch:  # inside an epoch: keep the gradients of an unfinished accumulation group
            pending = {}
            for name, param in self.model.named_parameters():
                if param.grad is not None:
                    grad = param.grad.detach().clone()
                    if self.distributed:
                        all_reduce_sum(grad)
                        grad /= self.world
                    pending[name] = grad.cpu()
        if self.main and self.folder is not None:
            ckpt.save_checkpoint(self.folder, {
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "model_signature": ckpt.model_signature(self.model),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "epoch": epoch, "batch": batch, "pending_gradients": pending or None, "epoch_partial": partial,
                "rng": ckpt.rng_state(), "history": self.history, "config": self.config.to_dict(),
                "world_size": self.world, "input_statistics": self.recorder.state_dict(),
            })
            self._record_statistics()
            self.model.save(self.folder / ckpt.MODEL_NAME, provenance={"training": self._provenance()})
        barrier()

    def _record_statistics(self) -> None:
        """Put the statistics of the inputs seen so far into the model (kept when none were seen)."""
        where = f" of rank {self.rank}" if self.world > 1 else ""
        stats = self.recorder.statistics(self.model.input_unit.to_string(),
                                         source=f"first {self.recorder.count} training inputs{where}, "
                                                "after litter and noise")
        if stats is not None:
            self.model.input_statistics = stats

    def _provenance(self) -> dict:
        h = self.history
        return {"config": self.config.to_dict(), "epochs_completed": len(h["train_losses"]),
                "train_loss": h["train_losses"][-1] if h["train_losses"] else None,
                "validation_loss": h["validation_losses"][-1] if h["validation_losses"] else None,
                "n_train": self.n_train, "n_validation": self.n_val, "world_size": self.world}

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainingResult:
        self._call("train_begin", {"config": self.config.to_dict(), "start_epoch": self.start_epoch,
                                   "start_batch": self.start_batch, "epochs": self.config.epochs,
                                   "n_batches": self.n_batches, "n_train": self.n_train,
                                   "n_validation": self.n_val, "world_size": self.world, "device": str(self.device)})
        total = max(0, (self.config.epochs - self.start_epoch) * self.n_batches - self.start_batch)
        bar = progress_bar(total, "training", unit="batch", disable=not (self.progress and self.main))
        stopped = False
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                sums = self._train_epoch(epoch, bar)
                if sums is None:
                    stopped = True
                    break
                if self._end_epoch(epoch, sums) and epoch + 1 < self.config.epochs:
                    stopped = True
                    break
        finally:
            bar.close()
            if self._restore_channels_last:
                self.model.channels_last = False
        if self.distributed:
            revert_sync_batchnorm(self.model)
        self._record_statistics()
        self.model.eval()
        result = self._result(stopped)
        self._call("train_end", result.to_dict())
        return result

    def _train_epoch(self, epoch: int, bar):
        """One epoch; returns its running sums, or ``None`` when a callback stopped it."""
        self.model.train()
        self.sampler.set_epoch(epoch)
        skip = self.start_batch if epoch == self.start_epoch else 0
        self.order.indices = list(iter(self.sampler))[skip * self.config.batch_size:]
        sums = {"loss_sum": 0.0, "count": 0, "seconds": 0.0, "batch_losses": []}
        self.optimizer.zero_grad(set_to_none=True)
        if skip:
            sums = dict(self.partial or sums)
            for name, param in self.model.named_parameters():
                if self.pending and name in self.pending:
                    param.grad = self.pending[name].to(param.device, param.dtype).clone()
        self.pending = self.partial = None
        start = time.perf_counter()
        for index, batch in enumerate(self.loader, start=skip):
            loss, count = self._step(epoch, index, batch)
            sums["loss_sum"] += loss * count
            sums["count"] += count
            sums["batch_losses"] = sums["batch_losses"] + [loss]
            self.history["samples_seen"] += int(count)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4g}")
            lr = self.optimizer.param_groups[0]["lr"]
            stop = self._call("batch_end", {"epoch": epoch, "batch": index, "n_batches": self.n_batches,
                                            "loss": loss, "lr": lr})
            if broadcast_flag(stop, self.comm):
                if index + 1 == self.n_batches:  # the epoch is complete: stop after its end
                    self.stop_requested = True
                    break
                sums["seconds"] += time.perf_counter() - start
                self._save(epoch, index + 1, sums)
                return None
        sums["seconds"] += time.perf_counter() - start
        return sums

    def _step(self, epoch: int, index: int, batch) -> tuple[float, int]:
        cfg = self.config
        generator = batch_generator(cfg.seed, "train", epoch, index, self.rank, self.device)
        drawn, reused = self.prepare.fields_drawn, self.prepare.fields_reused
        inputs, targets = self.prepare(batch, generator)
        if self.prepare.kind == "stream":  # this rank's draws (history is rank 0's)
            self.history["fields_drawn"] = self.history.get("fields_drawn", 0) + self.prepare.fields_drawn - drawn
            self.history["fields_reused"] = self.history.get("fields_reused", 0) + self.prepare.fields_reused - reused
        if not self.recorder.full:
            self.recorder.add(inputs)
        if cfg.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        group = index // cfg.batches_per_update
        group_size = min(cfg.batches_per_update, self.n_batches - group * cfg.batches_per_update)
        last = (index + 1) % cfg.batches_per_update == 0 or index + 1 == self.n_batches
        sync = self.net.no_sync() if (self.distributed and not last) else contextlib.nullcontext()
        with sync:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                prediction = self.net(inputs, reduce=False)
            loss = self.loss_fn(prediction, targets)
            self.scaler.scale(loss / group_size).backward()
        value = loss.item()  # the one wait for the device per batch, after backward is queued
        if not math.isfinite(value):  # refused before the optimiser step: the weights stay as they were
            raise FloatingPointError(f"the training loss became {value} at epoch {epoch + 1}, batch "
                                     f"{index + 1}; lower lr, use precision='fp32', or check the data for huge values")
        if last:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.history["updates"] += 1
        if self.world == 1:
            return value, int(targets.shape[0])
        stats = torch.tensor([value * targets.shape[0], targets.shape[0]], dtype=torch.float64, device=self.comm)
        all_reduce_sum(stats)
        return float(stats[0] / stats[1]), int(stats[1])

    def _end_epoch(self, epoch: int, sums: dict) -> bool:
        start = time.perf_counter()
        val = None
        if self.val_loader is not None:
            val = validation_loss(self.model, self.val_loader, self.prepare, self.loss_fn, self.config.seed,
                                  self.rank, self.amp_dtype, self.comm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        seconds = sums["seconds"] + time.perf_counter() - start
        train = sums["loss_sum"] / max(sums["count"], 1)
        h = self.history
        h["train_losses"].append(train)
        h["validation_losses"].append(val)
        h["learning_rates"].append(lr)
        h["epoch_times"].append(seconds)
        h["batch_losses"].append(list(sums["batch_losses"]))
        stop = self._call("epoch_end", {"epoch": epoch, "train_loss": train, "validation_loss": val, "lr": lr,
                                        "seconds": seconds})
        stop = broadcast_flag(stop, self.comm) or self.stop_requested
        self.stop_requested = False
        done = epoch + 1 == self.config.epochs
        if self.folder is not None and ((epoch + 1) % self.config.checkpoint_every == 0 or done or stop):
            self._save(epoch + 1, 0, None)
        return stop

    def _call(self, event: str, info: dict) -> bool:
        if not self.main:
            return False
        answers = [callback(event, info) for callback in self.callbacks]
        return any(answer is True for answer in answers)

    def _result(self, stopped: bool) -> TrainingResult:
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        h = self.history
        return TrainingResult(model=self.model, train_losses=list(h["train_losses"]),
                              validation_losses=list(h["validation_losses"]),
                              learning_rates=list(h["learning_rates"]), epoch_times=list(h["epoch_times"]),
                              peak_memory=peak, stopped=stopped, config=self.config, history=h,
                              checkpoint_dir=str(self.folder) if self.folder is not None else None)
