"""How good is a trained Reverter?  Validation loss and ``test_reverter`` metrics."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from .batches import BatchPreparer, batch_generator, inspect_dataset
from .config import TrainingConfig
from .distributed import all_reduce_sum, resolve_device
from .losses import make_loss

__all__ = ["test_reverter", "validation_loss", "mean_target_map", "ensemble_calibration"]


def validation_loss(model, loader, prepare: BatchPreparer, loss_fn, seed: int, rank: int = 0, amp_dtype=None,
                    comm_device="cpu") -> float:
    """Mean per-sample loss of ``model`` (eval mode) over ``loader``, all-reduced over ranks.

    Noise and litter draws depend only on ``(seed, batch, rank)``, so the value is
    comparable from epoch to epoch.  The model is back in training mode afterwards.
    """
    device = prepare.device
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=comm_device)
    with torch.no_grad():
        for index, batch in enumerate(loader):
            generator = batch_generator(seed, "validation", 0, index, rank, device)
            inputs, targets = prepare(batch, generator)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                prediction = model(inputs, reduce=False)
            per_sample = loss_fn.per_sample(prediction, targets)
            totals[0] += float(per_sample.double().sum())
            totals[1] += per_sample.shape[0]
    model.train()
    all_reduce_sum(totals)
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def mean_target_map(dataset, model, observer=None, batch_size: int = 8, device=None,
                    num_workers: int = 0) -> torch.Tensor:
    """Pixel-wise mean target ``(distance, lon)`` of ``dataset`` in the model's density unit."""
    device = resolve_device(device)
    kind = inspect_dataset(dataset, model, observer, what="train_dataset")
    prepare = BatchPreparer(model, kind, device, observer=observer, dataset=dataset)
    total, count = None, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        targets = prepare.targets(batch).double()
        total = targets.sum(dim=0) if total is None else total + targets.sum(dim=0)
        count += targets.shape[0]
    return (total / count)[0].float()


def test_reverter(model, dataset, noise=None, litter=None, observer=None, config: TrainingConfig | None = None, *,
                  baseline=None, train_dataset=None, batch_size: int | None = None, device=None,
                  seed: int | None = None, column_consistent: bool = False) -> dict:
    """Metrics of ``model`` on a held-out ``dataset`` (pairs, or fields with ``observer``).

    Parameters
    ----------
    model:
        A trained :class:`~iris_nb.model.Reverter` or :class:`~iris_nb.model.rim.RIM`
        (evaluated in eval mode; its mode is restored afterwards), or a list of them sharing
        one grid: an ensemble, scored by its mean map and by how well its spread tracks the
        error (``spread_skill``, ``coverage_1sigma``, ``coverage_2sigma``; see
        :func:`ensemble_calibration`).
    column_consistent:
        Score the densities after :func:`~iris_nb.model.consistency.column_consistent`
        (velocity-resolved column models only).
    dataset:
        Held-out samples, of either kind accepted by ``train_reverter``.
    noise, litter:
        Applied to the inputs as in training, with draws fixed by ``seed`` (default
        ``config.seed``).
    config:
        Gives the loss, its normalisation, the batch size and the device.
    baseline:
        The constant prediction to compare with: a ``(distance, lon)`` map or a scalar in the
        model's density unit.  Default: the mean target map of ``train_dataset`` when
        given, otherwise of ``dataset`` itself (an in-sample, slightly optimistic baseline,
        which makes the comparison harder for the model).

    Returns
    -------
    dict with
        ``physical_loss`` (the configured loss, dimensionless), ``constant_baseline_loss``
        (the same loss of predicting the baseline map for every sample), ``loss_ratio``,
        ``correlation`` (Pearson over all pixels of all samples of ``asinh(map / n)``),
        ``correlation_per_sample`` (mean of per-map Pearson coefficients),
        ``mass_error`` (mean over samples of ``|M_pred - M_true| / M_true``, with cell
        masses ``density * d^2`` since cell volumes grow as the distance squared),
        ``mass_bias`` (the signed mean), ``mean_abs_error_map`` and ``bias_map`` (numpy
        ``(distance, lon)`` float32 in the model's density unit), ``n_samples``, ``loss``,
        ``normalization`` (``n`` in the density unit) and ``density_unit``.  For a
        two-output model (density and velocity) the density metrics use its density map and
        the paper's loss alone, and ``velocity_rmse`` (km/s, weighted by ``rho / (rho + n)`` of
        the true density, so empty pixels do not count) and ``velocity_loss`` (the mean
        velocity term of :class:`~iris_nb.train.losses.DensityVelocityLoss`) are added.
    """
    config = TrainingConfig.from_dict(config) if isinstance(config, dict) else (config or TrainingConfig())
    device = resolve_device(device if device is not None else config.device)
    seed = config.seed if seed is None else int(seed)
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    if not members:
        raise ValueError("test_reverter got an empty list of models")
    model = members[0]
    if any(m.grid != model.grid or tuple(getattr(m, "outputs", ("density",))) != tuple(
            getattr(model, "outputs", ("density",))) for m in members):
        raise ValueError("the members of an ensemble must share one grid and the same outputs")
    if column_consistent and model.input_space != "v_density":
        raise ValueError("column_consistent=True needs a velocity-resolved column model (input_space='v_density')")
    kind = inspect_dataset(dataset, model, observer, what="test dataset")
    batch_size = int(batch_size or config.batch_size)
    baseline_map = _baseline_map(baseline, model)
    if baseline_map is None and train_dataset is not None:
        baseline_map = mean_target_map(train_dataset, model, observer, batch_size, device, config.num_workers)
    modes = [m.training for m in members]
    for m in members:
        m.to(device).eval()
    calibration = _Calibration() if len(members) > 1 else None
    # metrics use the paper's per-pixel loss (a mass term in training is reported as the mass error)
    metric_loss = "scaled_density" if config.loss == "scaled_density_mass" else config.loss
    loss_fn = make_loss(metric_loss, model, config.density_normalization)
    velocity_fn = getattr(loss_fn, "density_loss", None) and loss_fn  # two-output models: density + velocity
    loss_fn = getattr(loss_fn, "density_loss", loss_fn)  # the density metrics use the density loss alone
    velocity_sums = [0.0, 0.0, 0.0]  # sum w dv^2, sum w, sum of per-sample velocity terms
    prepare = BatchPreparer(model, kind, device, observer=observer, noise=noise, litter=litter, dataset=dataset)
    weights = torch.as_tensor(model.grid.distance.centers() ** 2, dtype=torch.float64, device=device)[:, None]
    acc = _Accumulator(loss_fn.n)
    kept_targets = []
    try:
        with torch.no_grad():
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=config.num_workers)
            for index, batch in enumerate(loader):
                inputs, targets = prepare(batch, batch_generator(seed, "test", 0, index, 0, device))
                predictions = torch.stack([m(inputs, reduce=False).float() for m in members])
                if column_consistent:
                    from ..model.consistency import column_consistent as consistent

                    predictions[:, :, :1] = torch.stack([consistent(m, p[:, :1], inputs)
                                                         for m, p in zip(members, predictions)])
                prediction = predictions.mean(dim=0)
                if calibration is not None:
                    calibration.add(torch.asinh(predictions[:, :, 0].double() / loss_fn.n),
                                    torch.asinh(targets[:, 0].double() / loss_fn.n))
                if velocity_fn is not None:
                    _add_velocity(velocity_sums, velocity_fn, prediction, targets)
                    prediction, targets = prediction[:, :1], targets[:, :1]
                acc.add(loss_fn, prediction, targets, weights)
                if baseline_map is None:
                    kept_targets.append(targets.cpu())
                else:
                    acc.add_baseline(loss_fn, baseline_map.to(device), targets)
    finally:
        for m, mode in zip(members, modes):
            m.train(mode)
    if baseline_map is None:
        stacked = torch.cat(kept_targets)
        baseline_map = stacked.double().mean(dim=0)[0].float()
        acc.add_baseline(loss_fn, baseline_map, stacked)
    metrics = acc.metrics(loss_fn, metric_loss, str(model.density_unit))
    metrics["column_consistent"] = bool(column_consistent)
    if calibration is not None:
        metrics.update(calibration.metrics())
    if velocity_fn is not None:
        metrics["velocity_rmse"] = math.sqrt(velocity_sums[0] / velocity_sums[1]) if velocity_sums[1] > 0 else float("nan")
        metrics["velocity_loss"] = velocity_sums[2] / max(acc.count, 1)
    return metrics


class _Calibration:
    """Running sums for :func:`ensemble_calibration`."""

    def __init__(self) -> None:
        self.variance = self.squared_error = 0.0
        self.within = [0, 0]
        self.pixels = 0
        self.members = 0

    def add(self, members: torch.Tensor, truth: torch.Tensor) -> None:
        """``members`` ``(M, ...)`` and ``truth`` ``(...)`` in the space the calibration is judged in."""
        m = members.shape[0]
        if m < 2:
            raise ValueError("ensemble calibration needs at least 2 members")
        mean, std = members.mean(dim=0), members.std(dim=0, unbiased=True)
        error = (truth - mean).abs()
        self.variance += float(std.square().sum())
        self.squared_error += float(error.square().sum())
        self.within[0] += int((error <= std).sum())
        self.within[1] += int((error <= 2 * std).sum())
        self.pixels += truth.numel()
        self.members = m

    def metrics(self) -> dict:
        m = self.members
        spread = math.sqrt((m + 1) / m * self.variance / self.pixels)
        skill = math.sqrt(self.squared_error / self.pixels)
        return {"spread_skill": spread / skill if skill > 0 else float("inf"),
                "coverage_1sigma": self.within[0] / self.pixels, "coverage_2sigma": self.within[1] / self.pixels,
                "n_members": m}


def ensemble_calibration(members, truth, n: float | None = None) -> dict:
    """How well an ensemble's spread tracks its error, pixel by pixel.

    ``members``: ``(M, ...)`` predictions, ``truth``: ``(...)`` (tensors or arrays); with ``n``
    both are first mapped to ``asinh(x / n)``, the space of the paper's loss (``test_reverter``
    does this with the loss's normalisation), else compared as they are.  Returns
    ``spread_skill`` = ``sqrt((M + 1) / M * mean(s^2)) / sqrt(mean((mean - truth)^2))`` with
    ``s`` the members' standard deviation (1 for a calibrated ensemble, below 1 when it is
    over-confident; the ``(M + 1) / M`` accounts for the finite ensemble), and
    ``coverage_1sigma`` / ``coverage_2sigma``, the fractions of pixels whose truth lies within
    1 and 2 ``s`` of the mean (0.68 and 0.95 for Gaussian, calibrated errors with many members).
    """
    members = torch.as_tensor(np.asarray(members), dtype=torch.float64)
    truth = torch.as_tensor(np.asarray(truth), dtype=torch.float64)
    if members.shape[1:] != truth.shape:
        raise ValueError(f"members {tuple(members.shape)} must be (M, *truth.shape) with truth {tuple(truth.shape)}")
    if n is not None:
        members, truth = torch.asinh(members / n), torch.asinh(truth / n)
    calibration = _Calibration()
    calibration.add(members, truth)
    return calibration.metrics()


def _add_velocity(sums: list, velocity_fn, prediction, targets) -> None:
    """Accumulate the gas-weighted velocity error (km/s) of a two-output batch."""
    rho = targets[:, :1].double().clamp_min(0.0)
    weight = rho / (rho + velocity_fn.n)
    sums[0] += float((weight * (prediction[:, 1:].double() - targets[:, 1:].double()).square()).sum())
    sums[1] += float(weight.sum())
    sums[2] += float(velocity_fn.velocity_term(prediction, targets).double().sum())


test_reverter.__test__ = False  # not a pytest test, although its name starts with "test_"


def _baseline_map(baseline, model):
    if baseline is None:
        return None
    value = torch.as_tensor(np.asarray(baseline, dtype=np.float32))
    shape = tuple(model.grid.top_down_shape)
    if value.ndim == 0:
        return value.expand(shape).clone()
    if tuple(value.shape) != shape:
        raise ValueError(f"baseline has shape {tuple(value.shape)}, expected a scalar or a (distance, lon) = "
                         f"{shape} map")
    return value


class _Accumulator:
    """Running sums (float64) for the metrics of :func:`test_reverter`."""

    def __init__(self, n: float) -> None:
        self.n = n
        self.loss_sum = self.baseline_sum = 0.0
        self.count = self.baseline_count = 0
        self.pooled = torch.zeros(5, dtype=torch.float64)  # sum a, t, a^2, t^2, a t
        self.pixels = 0
        self.sample_correlations: list[float] = []
        self.mass_errors: list[float] = []
        self.abs_error = self.bias = None

    def add(self, loss_fn, prediction, targets, weights) -> None:
        self.loss_sum += float(loss_fn.per_sample(prediction, targets).double().sum())
        self.count += targets.shape[0]
        a = torch.asinh(prediction.double() / self.n).flatten(1)
        t = torch.asinh(targets.double() / self.n).flatten(1)
        self.pooled += torch.stack([a.sum(), t.sum(), (a * a).sum(), (t * t).sum(), (a * t).sum()]).cpu()
        self.pixels += a.numel()
        ac, tc = a - a.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
        denominator = torch.sqrt((ac * ac).sum(dim=1) * (tc * tc).sum(dim=1))
        r = torch.where(denominator > 0, (ac * tc).sum(dim=1) / denominator.clamp_min(1e-300),
                        torch.full_like(denominator, float("nan")))
        self.sample_correlations += r.cpu().tolist()
        mass_pred = (prediction[:, 0].double() * weights).sum(dim=(1, 2))
        mass_true = (targets[:, 0].double() * weights).sum(dim=(1, 2))
        relative = torch.where(mass_true > 0, (mass_pred - mass_true) / mass_true.clamp_min(1e-300),
                               torch.full_like(mass_true, float("nan")))
        self.mass_errors += relative.cpu().tolist()
        difference = (prediction - targets)[:, 0].double()
        abs_sum, bias_sum = difference.abs().sum(dim=0).cpu(), difference.sum(dim=0).cpu()
        self.abs_error = abs_sum if self.abs_error is None else self.abs_error + abs_sum
        self.bias = bias_sum if self.bias is None else self.bias + bias_sum

    def add_baseline(self, loss_fn, baseline_map, targets) -> None:
        guess = baseline_map.to(targets.device, targets.dtype).expand(targets.shape[0], 1, *baseline_map.shape)
        self.baseline_sum += float(loss_fn.per_sample(guess, targets).double().sum())
        self.baseline_count += targets.shape[0]

    def metrics(self, loss_fn, loss_name: str, density_unit: str) -> dict:
        s_a, s_t, s_aa, s_tt, s_at = (float(v) for v in self.pooled)
        m = self.pixels
        covariance = s_at / m - (s_a / m) * (s_t / m)
        variances = (s_aa / m - (s_a / m) ** 2) * (s_tt / m - (s_t / m) ** 2)
        physical = self.loss_sum / self.count
        baseline = self.baseline_sum / self.baseline_count
        mass = np.asarray(self.mass_errors, dtype=float)
        finite = mass[np.isfinite(mass)]
        return {
            "physical_loss": physical,
            "constant_baseline_loss": baseline,
            "loss_ratio": physical / baseline if baseline > 0 else float("inf"),
            "correlation": covariance / math.sqrt(variances) if variances > 0 else float("nan"),
            "correlation_per_sample": float(np.nanmean(self.sample_correlations))
            if np.isfinite(self.sample_correlations).any() else float("nan"),
            "mass_error": float(np.mean(np.abs(finite))) if finite.size else float("nan"),
            "mass_bias": float(np.mean(finite)) if finite.size else float("nan"),
            "mean_abs_error_map": (self.abs_error / self.count).numpy().astype(np.float32),
            "bias_map": (self.bias / self.count).numpy().astype(np.float32),
            "n_samples": self.count,
            "loss": loss_name,
            "normalization": loss_fn.n,
            "density_unit": density_unit,
        }
