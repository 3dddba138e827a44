"""Training diagnostics: loss and learning rate per epoch."""

from __future__ import annotations

from matplotlib.ticker import MaxNLocator
import numpy as np

from ._common import new_axes

__all__ = ["loss_curves"]


def _series(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of per-epoch values, got shape {array.shape}")
    return array


def loss_curves(train_losses, validation_losses=None, learning_rates=None, ax=None, epochs=None,
                loss_label="loss", loss_units="dimensionless"):
    """Training (and validation) loss per epoch on a log axis, learning rate on a twin axis.

    ``train_losses``, ``validation_losses``: 1-D sequences, one value per epoch, in
    ``loss_units`` (the paper's ScaledDensityLoss is dimensionless); non-positive values are
    left out of the log axis.  ``learning_rates``: 1-D sequence per epoch (dimensionless
    Adam step size).  ``epochs``: x values (default 1, 2, ...), shared by all series, which
    must then have the same length.  Returns the loss Axes; the learning-rate Axes, if any,
    is its twin in ``ax.figure.axes``.
    """
    train = _series(train_losses, "train_losses")
    series = [("train", train, "-")]
    if validation_losses is not None:
        series.append(("validation", _series(validation_losses, "validation_losses"), "--"))
    lr = None if learning_rates is None else _series(learning_rates, "learning_rates")
    x = None if epochs is None else _series(epochs, "epochs")
    for name, values in [(n, v) for n, v, _ in series] + [("learning_rates", lr)]:
        if x is not None and values is not None and values.size != x.size:
            raise ValueError(f"{name} has {values.size} values but epochs has {x.size}; give one value per epoch")
    if not any(np.any(values[np.isfinite(values)] > 0) for _, values, _ in series):
        raise ValueError("no positive finite loss to draw on a log axis; check the loss values")
    ax = new_axes(ax, polar=False)
    handles = []
    for name, values, style in series:
        xs = np.arange(1, values.size + 1) if x is None else x
        handles += ax.plot(xs, np.where(values > 0, values, np.nan), style, marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{loss_label} [{loss_units}]")
    if lr is not None:
        lr_ax = ax.twinx()
        xs = np.arange(1, lr.size + 1) if x is None else x
        handles += lr_ax.step(xs, lr, where="post", color="0.4", linestyle=":", label="learning rate")
        if np.all(lr[np.isfinite(lr)] > 0):
            lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate [dimensionless]")
    ax.legend(handles=handles, loc="upper right")
    return ax
