"""TrainingPanel: set a training run up, start and stop it, and watch its loss live.

The panel edits one :class:`~iris_nb.train.run.RunConfig` -- the same value the command line
runs with ``iris-nb train --config run.yaml`` -- and trains it without blocking the kernel::

    from iris_nb.widgets import TrainingPanel
    panel = TrainingPanel(RunConfig(dataset="cmz_small.zarr", width=0.25), cube=cube)
    panel                          # display: data, noise, litter, training and run tabs
    panel.start(); panel.wait()    # what the Start button does, then block (scripts, tests)
    panel.result                   # the TrainingResult
    panel.save_yaml("run.yaml")    # the CLI runs the same run: iris-nb train --config run.yaml
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as ipw

from ..grids import PRESETS, Grid
from ..train import LaunchError
from ..train.config import PRECISIONS, SCHEDULERS
from ..train.run import RunConfig, grid_to_plain
from ._training_run import MODES, LiveView, TrainingJob
from .base import ConfigWidget, report_errors
from .reduction import check_size, preview_cube

__all__ = ["TrainingPanel"]

DEFAULT_STORE = "training_data.zarr"
_STYLE = {"description_width": "11em"}
_WIDE = ipw.Layout(width="34em")
_DEVICES = (("auto (CUDA when available)", None), ("cpu", "cpu"), ("cuda", "cuda"))


def _as_run_value(value) -> RunConfig:
    if isinstance(value, RunConfig):
        return value
    if isinstance(value, Mapping):
        return RunConfig.from_dict(dict(value))
    raise TypeError(f"the panel's value is a RunConfig or a dict of its fields, got {type(value).__name__}; "
                    "read a YAML file with TrainingPanel.from_yaml(path)")


def _parse_paths(text: str) -> list[str]:
    paths = [part.strip() for part in str(text).split(",") if part.strip()]
    if not paths:
        raise ValueError("give the path of at least one dataset store (several: separate them with commas); "
                         "write one with iris_nb.data.write_dataset(path, n, grid)")
    return paths


def _parse_milestones(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"milestones must be whole epochs separated by commas, like '16, 17, 18' "
                         f"(or empty for none), got {text!r}") from None


def _cube_on_grid(cube, grid: Grid | None):
    """``cube`` when its (lon, velocity) pixels are the grid's (the litter preview needs that), else None."""
    if cube is None or grid is None:
        return None
    std = preview_cube(cube)
    return cube if (std.sizes["lon"], std.sizes["velocity"]) == grid.pv_shape else None


class TrainingPanel(ConfigWidget):
    """Set up, run and watch a training: the run config, a Start and a Stop button, live curves.

    Parameters
    ----------
    run:
        The initial :class:`~iris_nb.train.run.RunConfig` (or a dict of its fields).  Default:
        the paper's training on ``training_data.zarr``.
    cube:
        Optional cube DataArray ``(lon, lat, velocity)`` (brightness in K; NaN where
        unobserved) for the previews of the embedded reduction and noise pickers.
    dataset:
        Optional in-memory pairs ``(observation (1, lon, v), target (1, distance, lon))`` (e.g.
        :func:`iris_nb.data.field_datasets.observed_pairs`).  Start then trains on them locally instead
        of reading the stores (the value's ``dataset`` paths still go into the YAML for the CLI).
    model:
        Optional :class:`~iris_nb.model.Reverter` to train on ``dataset`` (default: a fresh one
        of ``run.width`` on the dataset's grid).
    mode, nproc:
        Initial run mode, ``"local"`` (a background thread in this kernel) or ``"distributed"``
        (``nproc`` processes through :func:`~iris_nb.train.launch.launch`).
    plot_every:
        Also redraw the loss plot every this many batches (``None``: at each epoch end).
    figsize, dpi:
        Size of the loss plot in inches and its resolution (pixels per inch).

    Attributes
    ----------
    value : RunConfig
        The run; ``panel.to_dict() == panel.value.to_dict()`` (the CLI's YAML).  A control set
        to an impossible value (negative lr, zero epochs) shows a message and leaves it
        unchanged; observe it with ``panel.observe(handler, names="value")``.
    running : bool
        Whether a training started here still runs.
    result : TrainingResult or None
        The result of the last run once it ended (losses dimensionless, ``model`` the trained
        Reverter: inputs ``(B, 1, lon, v)``, outputs ``(B, 1, distance, lon)`` in Msun/pc3).
    live : LiveView
        Progress bar, status line and loss plot (``live.history`` holds the plotted values).
    reduction_picker, noise_picker, litter_picker :
        The embedded :class:`ReductionPicker`, :class:`NoisePicker` and :class:`LitterPicker`.
    """

    def __init__(self, run=None, cube=None, dataset=None, model=None, *, mode: str = "local", nproc: int = 2,
                 plot_every: int | None = None, figsize=(5.5, 3.2), dpi: int = 80) -> None:
        figsize, dpi = check_size(figsize, dpi)
        if mode not in MODES:
            raise ValueError(f"mode must be 'local' or 'distributed', got {mode!r}")
        if run is None:
            grid = getattr(dataset, "grid", None)
            run = RunConfig(dataset=DEFAULT_STORE, grid=grid, reduction=getattr(dataset, "reduction", "mean"))
        self.dataset, self.model = dataset, model
        self.result = None
        self._job: TrainingJob | None = None
        self._lock = threading.Lock()
        self._syncing = False
        self._control_error: str | None = None
        super().__init__(run)
        self._build_config_controls(cube)
        self.mode_input = ipw.ToggleButtons(options=list(MODES), value=mode, description="Run",
                                            tooltips=["a background thread in this kernel",
                                                      "several processes through torchrun (launch)"],
                                            style={"button_width": "7em", **_STYLE})
        self.nproc_input = ipw.IntText(value=nproc, description="Processes", style=_STYLE,
                                       tooltip="processes on this machine in distributed mode (one per GPU)")
        self.nproc_input.disabled = mode == "local"
        self.mode_input.observe(lambda change: setattr(self.nproc_input, "disabled", change["new"] == "local"),
                                names="value")
        self.start_button = ipw.Button(description="Start", icon="play", button_style="success")
        self.stop_button = ipw.Button(description="Stop", icon="stop", button_style="danger",
                                      tooltip="stop after the current batch; the checkpoint is kept")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.live = LiveView(figsize, dpi, plot_every)
        self._widget = self._layout()
        self._widget.add_class("iris-nb-training-panel")
        self.observe(self._on_value, names="value")
        self._sync_controls()

    # ------------------------------------------------------------------ controls
    def _build_config_controls(self, cube) -> None:
        from .litter import LitterPicker
        from .noise import NoisePicker
        from .reduction import ReductionPicker

        run = self.value
        text = lambda desc, tip: ipw.Text(description=desc, tooltip=tip, style=_STYLE, layout=_WIDE)  # noqa: E731
        self.store_input = text("Dataset store(s)", "zarr stores written by write_dataset, separated by commas")
        self.grid_input = ipw.Dropdown(description="Grid", style=_STYLE)
        self.width_input = ipw.FloatText(description="Model width", step=0.25, style=_STYLE,
                                         tooltip="channel multiplier: 1.0 is the IRIS network, 0.25 fits CPUs")
        self.checkpoint_input = text("Checkpoint folder", "checkpoint.pt, model.pt and result.json go here")
        self.reduction_picker = ReductionPicker(cube=cube, value=run.reduction)
        self.noise_picker = NoisePicker(cube=cube, value=run.noise, reduction=run.reduction, grid=run.grid)
        self._noise_link = ipw.dlink((self.reduction_picker, "value"), (self.noise_picker, "reduction"))
        self.litter_picker = LitterPicker(value=run.litter, grid=run.grid, cube=_cube_on_grid(cube, run.grid))
        self.epochs_input = ipw.IntText(description="Epochs", style=_STYLE)
        self.batch_input = ipw.IntText(description="Batch size", style=_STYLE, tooltip="samples per batch per process")
        self.accumulate_input = ipw.IntText(description="Batches per update", style=_STYLE,
                                            tooltip="gradients of this many batches are averaged per step")
        self.validation_input = ipw.FloatText(description="Validation fraction", step=0.05, style=_STYLE)
        self.lr_input = ipw.FloatText(description="Learning rate", step=1e-4, style=_STYLE)
        self.scheduler_input = ipw.Dropdown(options=list(SCHEDULERS), description="Schedule", style=_STYLE)
        self.milestones_input = text("Milestones (epochs)", "multistep: the rate is multiplied by gamma after these")
        self.gamma_input = ipw.FloatText(description="Gamma", step=0.1, style=_STYLE)
        self.device_input = ipw.Dropdown(options=list(_DEVICES), description="Device", style=_STYLE)
        self.precision_input = ipw.Dropdown(options=list(PRECISIONS), description="Precision", style=_STYLE)
        for control in self._controls():
            control.observe(self._on_control, names="value")

    def _controls(self) -> list:
        return [self.store_input, self.grid_input, self.width_input, self.checkpoint_input, self.reduction_picker,
                self.noise_picker, self.litter_picker, self.epochs_input, self.batch_input, self.accumulate_input,
                self.validation_input, self.lr_input, self.scheduler_input, self.milestones_input,
                self.gamma_input, self.device_input, self.precision_input]

    def _layout(self) -> ipw.Widget:
        data = ipw.VBox([self.store_input, self.grid_input, self.width_input, self.reduction_picker.widget])
        training = ipw.VBox([self.epochs_input, self.batch_input, self.accumulate_input, self.validation_input,
                             self.lr_input, self.scheduler_input, self.milestones_input, self.gamma_input,
                             self.device_input, self.precision_input])
        run = ipw.VBox([self.mode_input, self.nproc_input, self.checkpoint_input])
        tabs = ipw.Tab(children=[data, self.noise_picker.widget, self.litter_picker.widget, training, run],
                       titles=("Data", "Noise", "Litter", "Training", "Run"))
        buttons = ipw.HBox([self.start_button, self.stop_button])
        return ipw.VBox([tabs, self.error.widget, buttons, self.live.widget])

    def _sync_controls(self) -> None:
        """Show :attr:`value` in the controls (without reading them back meanwhile)."""
        run, cfg = self.value, self.value.training
        self._syncing = True
        try:
            self.store_input.value = ", ".join(run.dataset)
            self.grid_input.options = self._grid_options(run.grid)
            self.grid_input.value = self._grid_choice(run.grid)
            self.width_input.value = run.width
            self.checkpoint_input.value = run.checkpoint_dir
            self.reduction_picker.value = run.reduction
            self.noise_picker.value = run.noise
            self.litter_picker.value = run.litter
            self.epochs_input.value = cfg.epochs
            self.batch_input.value = cfg.batch_size
            self.accumulate_input.value = cfg.batches_per_update
            self.validation_input.value = cfg.validation_fraction
            self.lr_input.value = cfg.lr
            self.scheduler_input.value = cfg.scheduler
            self.milestones_input.value = ", ".join(str(m) for m in cfg.milestones)
            self.gamma_input.value = cfg.gamma
            devices = list(_DEVICES) + ([(cfg.device, cfg.device)] if cfg.device not in dict(_DEVICES).values() else [])
            self.device_input.options = devices
            self.device_input.value = cfg.device
            self.precision_input.value = cfg.precision
            self.milestones_input.disabled = self.gamma_input.disabled = cfg.scheduler != "multistep"
        finally:
            self._syncing = False
        self._control_error = None

    @staticmethod
    def _grid_options(grid: Grid | None) -> list:
        options = [("from the store(s)", None)] + [(name, name) for name in PRESETS]
        plain = grid_to_plain(grid)
        if grid is not None and not isinstance(plain, str):
            options.append((f"{grid.name} (custom)", grid))
        return options

    @staticmethod
    def _grid_choice(grid: Grid | None):
        plain = grid_to_plain(grid)
        return plain if plain is None or isinstance(plain, str) else grid

    def _run_from_controls(self) -> RunConfig:
        """The run the controls describe; ValueError/TypeError saying what to fix."""
        training = self.value.training.replace(
            epochs=self.epochs_input.value, batch_size=self.batch_input.value,
            batches_per_update=self.accumulate_input.value, validation_fraction=self.validation_input.value,
            lr=self.lr_input.value, scheduler=self.scheduler_input.value,
            milestones=_parse_milestones(self.milestones_input.value), gamma=self.gamma_input.value,
            device=self.device_input.value, precision=self.precision_input.value)
        return self.value.replace(dataset=_parse_paths(self.store_input.value), grid=self.grid_input.value,
                                  width=self.width_input.value, checkpoint_dir=self.checkpoint_input.value.strip(),
                                  reduction=self.reduction_picker.value, noise=self.noise_picker.value,
                                  litter=self.litter_picker.value, training=training)

    def _on_control(self, change) -> None:
        if self._syncing:
            return
        try:
            run = self._run_from_controls()
        except (ValueError, TypeError) as err:
            self._control_error = str(err)
            self.error.show(self._control_error)
            return
        self._control_error = None
        if run == self.value:
            self.error.clear()
        self._syncing = True  # the controls already show this run: do not rewrite them while the user types
        try:
            self.value = run
        finally:
            self._syncing = False
        self.milestones_input.disabled = self.gamma_input.disabled = run.training.scheduler != "multistep"

    def _on_value(self, change) -> None:
        if not self._syncing:
            self._sync_controls()

    # ------------------------------------------------------------------ value
    def check_value(self, value) -> RunConfig:
        """A :class:`RunConfig` from a RunConfig or a dict of its fields, else ValueError/TypeError."""
        return _as_run_value(value)

    @property
    def mode(self) -> str:
        """``"local"`` or ``"distributed"`` (the Run tab's choice)."""
        return self.mode_input.value

    @property
    def nproc(self) -> int:
        """Processes for distributed mode (the Run tab's number)."""
        return self.nproc_input.value

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether a training started by this panel still runs."""
        return self._job is not None and self._job.running

    @property
    def job(self) -> TrainingJob | None:
        """The last :class:`TrainingJob` (its ``handle`` is the LaunchHandle in distributed mode)."""
        return self._job

    def start(self) -> bool:
        """Start the run the panel shows, in the background; ``True`` when it started.

        Refused with a message in the panel (nothing starts) while a run is going on, while a
        control holds an impossible value, or when the run's files do not fit (missing store,
        grid mismatch: :meth:`RunConfig.check`).
        """
        with self._lock:
            if self.running:
                self.error.show("a training is already running in this panel; press Stop (it stops after the "
                                "current batch) or wait for it to end before starting another", "warning")
                return False
            if self._control_error is not None:
                self.error.show(f"not started: {self._control_error}")
                return False
            run, mode = self.value, self.mode
            with report_errors(self.error, (ValueError, TypeError, OSError, LaunchError)):
                job = TrainingJob(run, mode=mode, nproc=self.nproc, dataset=self.dataset, model=self.model,
                                  on_event=self.live.on_event, on_finish=self._on_finish)
                self.live.begin(run, mode, self.nproc)
                self.result = None
                try:
                    job.start()
                except BaseException:
                    self.live.label.value = ""
                    self.live.set_status("not started", "error")
                    raise
                self._job = job
                self.error.clear()
                return True
            return False

    def stop(self) -> None:
        """Ask the running training to stop after its current batch (a checkpoint is written)."""
        if not self.running:
            self.error.show("nothing is running; press Start to train", "info")
            return
        self._job.request_stop()
        self.live.set_status("stopping after the current batch (the checkpoint is kept)...", "warning")

    def _on_finish(self, job: TrainingJob) -> None:
        if job.error is None:
            self.result = job.result
        self.live.finish(job)
        if job.error is not None:
            self.error.show(f"the training failed: {type(job.error).__name__}: {job.error}")
        elif job.callback_error is not None:
            self.error.show(f"the live display failed (training unaffected): {job.callback_error}", "warning")

    def wait(self, timeout: float | None = None):
        """Block until the run ends and return its ``TrainingResult`` (scripts, tests, notebooks
        run top to bottom).  Raises the training's error if it failed, ``TimeoutError`` if it still
        runs after ``timeout`` seconds, ``RuntimeError`` if nothing was started."""
        if self._job is None:
            raise RuntimeError("no training was started from this panel; press Start or call panel.start()")
        return self._job.wait(timeout)

    # ------------------------------------------------------------------ config files
    def to_dict(self) -> dict:
        """The run as the CLI's YAML holds it (``RunConfig.to_dict``)."""
        return self.value.to_dict()

    @classmethod
    def from_dict(cls, data, **kwargs) -> "TrainingPanel":
        """A panel holding the run ``data`` (a dict of RunConfig fields, or a RunConfig);
        ``kwargs`` (``cube``, ``dataset``, ``model``, ``mode``...) go to the constructor."""
        return cls(run=_as_run_value(data), **kwargs)

    def save_yaml(self, path) -> Path:
        """Write the run to the YAML file ``path`` (``iris-nb train --config path`` runs it)."""
        self.value.to_yaml(path)
        return Path(path)

    @classmethod
    def from_yaml(cls, path, **kwargs) -> "TrainingPanel":
        """A panel holding the run of a YAML file (as written by :meth:`save_yaml`)."""
        return cls(run=RunConfig.from_yaml(Path(path)), **kwargs)

    def cli_command(self, path="run.yaml") -> str:
        """The shell command that runs the same training from the YAML file ``path``."""
        if self.mode == "distributed":
            return f"torchrun --nproc-per-node {self.nproc} -m iris_nb.cli train --config {path}"
        return f"iris-nb train --config {path}"

    def __repr__(self) -> str:
        state = "running" if self.running else ("done" if self.result is not None else "idle")
        return f"TrainingPanel({self.mode}, {state}, value={self.value!r})"
