"""The running side of :class:`~iris_nb.widgets.training.TrainingPanel`.

* :class:`TrainingJob` -- one training started without blocking the kernel: a daemon thread
  that calls :func:`~iris_nb.train.run.run_training` (or
  :func:`~iris_nb.train.run.train_pairs` on an in-memory dataset), or a
  :func:`~iris_nb.train.launch.launch` handle on ``torchrun`` processes and a thread that
  waits for it.  Stopping is always *clean*: the training callback answers ``True`` after the
  current batch, a checkpoint is written, and the result says ``stopped=True``.
* :class:`LiveView` -- the progress bar, status line and loss / learning-rate plot that the
  training events (``train_begin``, ``batch_end``, ``epoch_end``, ``train_end``; see
  :func:`~iris_nb.train.loop.train_reverter`) update while the run goes on.

Events arrive on the training thread (local runs) or on the launch handle's reader thread
(distributed runs); ipywidgets sends their updates to the browser from there.
"""

from __future__ import annotations

import html
import math
import threading
import time

import ipywidgets as ipw

from .base import render_png

__all__ = ["TrainingJob", "LiveView", "loss_plot_png"]

MODES = ("local", "distributed")


class TrainingJob:
    """One training run in the background; the kernel stays free while it trains.

    Parameters
    ----------
    run:
        The :class:`~iris_nb.train.run.RunConfig` to execute (checked before anything starts).
    mode:
        ``"local"``: a thread in this process; ``"distributed"``: ``nproc`` processes through
        :func:`~iris_nb.train.launch.launch` (``torchrun``, gloo on CPU, NCCL on GPUs).
    nproc:
        Number of processes in distributed mode.
    dataset, model:
        Optional in-memory pairs (local mode only) and the model to train on them.
    on_event:
        ``on_event(event, info)`` for every training event (rank 0's in distributed mode).
    on_finish:
        ``on_finish(job)`` once the run ended (finished, stopped or failed), on the job's thread.
    """

    def __init__(self, run, mode: str = "local", nproc: int = 1, dataset=None, model=None,
                 on_event=None, on_finish=None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'local' or 'distributed', got {mode!r}")
        if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
            raise ValueError(f"the number of processes must be a positive integer, got {nproc!r}")
        if mode == "distributed" and dataset is not None:
            raise ValueError("distributed training reads its data from dataset stores, but this panel trains "
                             "on an in-memory dataset; write the pairs with iris_nb.data.write_dataset and "
                             "give the store path, or choose local mode")
        self.run, self.mode, self.nproc = run, mode, nproc
        self.dataset, self.model = dataset, model
        self._on_event, self._on_finish = on_event, on_finish
        self._stop = threading.Event()
        self.handle = None
        self.result = None
        self.error: BaseException | None = None
        self.callback_error: BaseException | None = None
        self.started = self.ended = None
        self._thread = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Check the run and start it; errors in the set-up (missing store, bad processes,
        incompatible in-memory data) raise here, before any thread or process starts."""
        if self.mode == "distributed":
            from ..train.launch import launch

            self.handle = launch(self.run, nproc_per_node=self.nproc, block=False, progress=False, echo=False,
                                 callbacks=[self._callback])
            target = self.handle.wait
        elif self.dataset is not None:
            from ..train.run import prepare_pairs, train_pairs

            model = prepare_pairs(self.run, self.dataset, self.model)["model"]  # errors before the thread
            target = lambda: train_pairs(self.run, self.dataset, model, callbacks=[self._callback],  # noqa: E731
                                         progress=False)
        else:
            from ..train.run import run_training

            self.run.check()
            target = lambda: run_training(self.run, callbacks=[self._callback], progress=False)  # noqa: E731
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._main, args=(target,), daemon=True, name="iris-nb-training")
        self._thread.start()

    def _main(self, target) -> None:
        try:
            self.result = target()
        except BaseException as err:  # noqa: BLE001 - kept for wait() and shown by the panel
            self.error = err
        finally:
            self.ended = time.monotonic()
            if self._on_finish is not None:
                self._on_finish(self)

    def _callback(self, event: str, info: dict):
        if self._on_event is not None:
            try:
                self._on_event(event, dict(info or {}))
            except Exception as err:  # noqa: BLE001 - a display problem must not end the training
                self.callback_error = err
        return self._stop.is_set() or None

    def request_stop(self) -> None:
        """Stop cleanly after the current batch, with a checkpoint (every rank in distributed mode)."""
        self._stop.set()
        if self.handle is not None:
            self.handle.request_stop()

    # ------------------------------------------------------------------ state
    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """``True`` from :meth:`start` until the run has ended."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None):
        """Block until the run ends; return its ``TrainingResult`` or raise its error.

        ``TimeoutError`` when it still runs after ``timeout`` seconds (it goes on; call again).
        """
        if self._thread is None:
            raise RuntimeError("this training job was never started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the training still runs after {timeout} s; call wait() again, or stop() it")
        if self.error is not None:
            raise self.error
        return self.result


def loss_plot_png(history: dict, provisional: dict | None = None, figsize=(5.5, 3.2), dpi: int = 80) -> bytes:
    """PNG of the per-epoch loss and learning-rate curves (:func:`iris_nb.plot.loss_curves`).

    ``history``: ``{"epochs": [1, 2, ...], "train_losses", "validation_losses" (None
    entries allowed), "learning_rates"}``, losses dimensionless.  ``provisional``: an
    unfinished epoch ``{"epoch": x (fractional), "train_loss": running mean, "lr": lr}``
    drawn as the last point.
    """
    from ..plot import loss_curves

    epochs = list(history["epochs"])
    train = list(history["train_losses"])
    validation = [math.nan if v is None else v for v in history["validation_losses"]]
    lr = list(history["learning_rates"])
    if provisional is not None:
        epochs.append(provisional["epoch"])
        train.append(provisional["train_loss"])
        validation.append(math.nan)
        lr.append(provisional["lr"])
    has_validation = any(math.isfinite(v) for v in validation)

    def draw(ax):
        loss_curves(train, validation if has_validation else None, lr, ax=ax, epochs=epochs)
        ax.set_title("loss and learning rate per epoch", fontsize=10)

    return render_png(draw, figsize, dpi)


class LiveView:
    """Progress bar, status line and live loss / learning-rate plot of a training run.

    ``widget`` is the container; ``progress`` (IntProgress, batches done of the run),
    ``label`` (epoch, batch, last loss), ``status`` (one line), ``plot`` (PNG image) are its
    parts; ``history`` holds the plotted per-epoch values.  ``plot_every``: also redraw every
    this many batches, with the unfinished epoch as a provisional point (``None``: only at
    epoch ends).
    """

    def __init__(self, figsize=(5.5, 3.2), dpi: int = 80, plot_every: int | None = None) -> None:
        if plot_every is not None and (isinstance(plot_every, bool) or not isinstance(plot_every, int)
                                       or plot_every < 1):
            raise ValueError(f"plot_every must be a positive number of batches or None, got {plot_every!r}")
        self.figsize, self.dpi, self.plot_every = figsize, dpi, plot_every
        self.progress = ipw.IntProgress(value=0, min=0, max=1, description="Progress",
                                        bar_style="info", layout=ipw.Layout(width="24em"))
        self.label = ipw.HTML(value="")
        self.status = ipw.HTML(value="")
        self.status.add_class("iris-nb-training-status")
        width = f"{round(figsize[0] * dpi)}px"
        self.plot = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="100%", display="none"))
        self.plot.add_class("iris-nb-loss-plot")
        self.widget = ipw.VBox([ipw.HBox([self.progress, self.label]), self.status, self.plot])
        self.history = {"epochs": [], "train_losses": [], "validation_losses": [], "learning_rates": []}
        self.plot_updates = 0
        self.status_text = ""
        self._epochs = 1
        self._batch_losses: list[float] = []
        self.set_status("idle: set the run up, then press Start")

    def set_status(self, text: str, level: str = "info") -> None:
        """Show one line of plain text (``level``: ``"info"``, ``"ok"``, ``"warning"``, ``"error"``)."""
        colours = {"info": "#0b3d66", "ok": "#1b5e20", "warning": "#6b4e00", "error": "#a40000"}
        self.status_text = str(text)
        self.status.value = (f'<span style="color:{colours[level]};font-size:0.9em">'
                             f"{html.escape(self.status_text)}</span>")

    # ------------------------------------------------------------------ events
    def begin(self, run, mode: str, nproc: int) -> None:
        """Reset the bar for a run of ``run.training.epochs`` epochs about to start."""
        self._epochs = run.training.epochs
        where = "this kernel (background thread)" if mode == "local" else f"{nproc} processes (torchrun)"
        self.progress.bar_style = "info"
        self.label.value = "<small>starting...</small>"
        self.set_status(f"running on {where}; checkpoints in {run.checkpoint_dir}")

    def on_event(self, event: str, info: dict) -> None:
        """Update from one training event (see :func:`~iris_nb.train.loop.train_reverter`)."""
        if event == "train_begin":
            self._train_begin(info)
        elif event == "batch_end":
            self._batch_end(info)
        elif event == "epoch_end":
            self._epoch_end(info)

    def _train_begin(self, info: dict) -> None:
        start, n_batches = int(info.get("start_epoch", 0)), int(info.get("n_batches", 1))
        self._epochs = int(info.get("epochs", self._epochs))
        self.progress.max = max(1, self._epochs * n_batches)
        self.progress.value = start * n_batches + int(info.get("start_batch", 0))
        keep = [k for k, epoch in enumerate(self.history["epochs"]) if epoch <= start]
        for key in self.history:  # a resumed run continues the curves of the epochs it keeps
            self.history[key] = [self.history[key][k] for k in keep]
        self._batch_losses = []
        if start:
            self.label.value = f"<small>resumed at epoch {start + 1}/{self._epochs}</small>"

    def _batch_end(self, info: dict) -> None:
        epoch, batch, n_batches = int(info["epoch"]), int(info["batch"]), int(info["n_batches"])
        self.progress.max = max(1, self._epochs * n_batches)
        self.progress.value = min(self.progress.max, epoch * n_batches + batch + 1)
        loss, lr = info.get("loss"), info.get("lr")
        if loss is not None:
            self._batch_losses.append(float(loss))
        parts = [f"epoch {epoch + 1}/{self._epochs}", f"batch {batch + 1}/{n_batches}"]
        parts += [f"loss {loss:.4g}"] if loss is not None else []
        parts += [f"lr {lr:.3g}"] if lr is not None else []
        self.label.value = f"<small>{' · '.join(parts)}</small>"
        if self.plot_every and (batch + 1) % self.plot_every == 0 and batch + 1 < n_batches and self._batch_losses:
            mean = sum(self._batch_losses) / len(self._batch_losses)
            self.redraw({"epoch": epoch + (batch + 1) / n_batches, "train_loss": mean, "lr": lr or math.nan})

    def _epoch_end(self, info: dict) -> None:
        self._batch_losses = []
        h = self.history
        h["epochs"].append(int(info["epoch"]) + 1)
        h["train_losses"].append(float(info["train_loss"]))
        h["validation_losses"].append(None if info.get("validation_loss") is None else float(info["validation_loss"]))
        h["learning_rates"].append(float(info["lr"]))
        self.redraw()

    def redraw(self, provisional: dict | None = None) -> None:
        """Draw the curves of :attr:`history` (and an unfinished epoch) into :attr:`plot`."""
        if not self.history["epochs"] and provisional is None:
            return
        self.plot.value = loss_plot_png(self.history, provisional, self.figsize, self.dpi)
        self.plot.layout.display = None
        self.plot_updates += 1

    def finish(self, job) -> None:
        """Final bar colour and status line for a job that ended."""
        seconds = (job.ended or time.monotonic()) - (job.started or time.monotonic())
        if job.error is not None:
            self.progress.bar_style = "danger"
            self.set_status(f"failed after {seconds:.0f} s: {type(job.error).__name__}: {job.error}", "error")
            return
        result = job.result
        last = f"train loss {result.train_losses[-1]:.4g}" if result.train_losses else "no epoch completed"
        val = result.validation_losses[-1] if result.validation_losses else None
        last += f", validation loss {val:.4g}" if val is not None else ""
        where = f"; checkpoint in {result.checkpoint_dir}" if result.checkpoint_dir else ""
        if result.stopped or job.stop_requested and result.epochs_completed < result.config.epochs:
            self.progress.bar_style = "warning"
            self.set_status(f"stopped after {result.epochs_completed}/{result.config.epochs} epochs "
                            f"({seconds:.0f} s), {last}{where}; Start resumes from the checkpoint", "warning")
        else:
            self.progress.bar_style = "success"
            self.progress.value = self.progress.max
            self.set_status(f"finished {result.epochs_completed} epochs in {seconds:.0f} s, {last}{where}", "ok")
