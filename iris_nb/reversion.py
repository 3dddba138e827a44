"""Reversion: a spectral-line cube in, a top-down density map out.

:func:`revert` chains the steps of DESIGN.md section 2 for a trained
:class:`~iris_nb.model.Reverter` (or an ensemble of them):

standardise the cube -> regrid it to the model grid -> reduce latitude with the model's
reduction -> convert units -> compare the PV image with the model's training inputs
(:mod:`iris_nb.diagnose`, an :class:`~iris_nb.diagnose.OutOfDistributionWarning` when it lies
outside them) -> run the network in batches -> label the result.

Everything that can be wrong with the input (cube, units, models) is checked before the
cube is regridded, and the network only runs once all unit conversions are known to work.
:func:`prepare_inputs` is the part up to the PV images, shared with
:func:`iris_nb.diagnose.diagnose`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json

import astropy.units as u
import numpy as np
import torch
import xarray as xr

from . import __version__
from .conventions import cube_beam, cube_rest_frequency
from .cube import reduce_cube, standardize_cube
from .model.consistency import column_consistent as _column_consistent
from .model.consistency import reobserve
from .model.optimize import optimize_for_inference
from .regrid import regrid_cube
from .units import SI_UNITS, brightness_scale, density_scale, parse_unit

__all__ = ["revert", "prepare_inputs", "PreparedInputs", "input_space_for", "best_device"]

_SOURCE_KEYS = ("source", "filename", "file", "path", "origin", "title", "OBJECT")


def best_device(device=None) -> torch.device:
    """The device to run on: ``device`` if given, else cuda, else mps, else cpu."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device={device!r} is not a torch device ({err}); use 'cpu', 'cuda', 'cuda:0' or 'mps'"
            ) from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def input_space_for(unit, attrs: dict | None = None, rest_frequency: float | None = None):
    """How cube data in ``unit`` enter a model: ``(in_space, in_unit, scale)``.

    Temperatures (``K``, ``mK``) enter as ``"temperature"``; surface brightness (``Jy/sr``, SI
    intensity) as ``"intensity"``; velocity-resolved column density as ``"v_density"``; ``Jy/beam``
    is turned into K with the beam in ``attrs`` (``beam_fwhm`` arcsec, or FITS ``BMAJ``/``BMIN``)
    and enters as ``"temperature"`` after multiplying the data by ``scale``.  ``rest_frequency`` (GHz)
    is used for Jy/beam when ``attrs`` state none.
    """
    attrs = attrs or {}
    unit = parse_unit(unit, "cube data")
    if unit.is_equivalent(SI_UNITS["temperature"]):
        return "temperature", unit, 1.0
    if unit.is_equivalent(SI_UNITS["intensity"]):
        return "intensity", unit, 1.0
    if unit.is_equivalent(SI_UNITS["v_density"]):
        return "v_density", unit, 1.0
    if "beam" in unit.to_string() or unit.is_equivalent(u.Jy / u.beam):
        freq = cube_rest_frequency(attrs) or rest_frequency
        if freq is None:
            raise ValueError(
                f"cube data are in {unit}; converting to K needs a rest frequency: "
                "set cube.attrs['rest_frequency'] (GHz)"
            )
        return "temperature", u.K, brightness_scale(unit, freq, cube_beam(attrs))
    raise ValueError(
        f"cube data are in {unit}, which the network cannot take: expected a brightness temperature "
        "(K, mK), a surface brightness (Jy/sr, or Jy/beam with attrs['beam_fwhm'] in arcsec) or a "
        "velocity-resolved column density; fix attrs['units'] or pass in_units="
    )


def check_models(model_or_models) -> tuple[list, bool]:
    """Validate one model or a list of them; return (models, is_ensemble)."""
    ensemble = isinstance(model_or_models, (list, tuple))
    models = list(model_or_models) if ensemble else [model_or_models]
    if not models:
        raise ValueError("got an empty list of models; pass at least one Reverter")
    for i, model in enumerate(models):
        missing = [a for a in ("grid", "reduction", "call_in_units") if not hasattr(model, a)]
        if missing or not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model {i} is a {type(model).__name__}, not a Reverter (missing {missing or 'nn.Module'}); "
                "load one with iris_nb.Reverter.load(path)"
            )
    grids = {m.grid for m in models}
    if len(grids) > 1:
        names = [m.grid.name for m in models]
        raise ValueError(
            f"the models of an ensemble must share one grid, got {len(grids)} different grids "
            f"(names {names}); revert with each group separately"
        )
    return models, ensemble


@dataclasses.dataclass(frozen=True)
class PreparedInputs:
    """A cube made ready for a group of models by :func:`prepare_inputs`.

    ``pvs`` maps each reduction the models use to ``(pv, values)``: the reduced DataArray
    ``(extra?, lon, velocity)`` and its float32 values ``(N, lon, v)`` in ``in_unit`` of
    ``in_space`` (``N`` = 1, or the stack length); a model takes
    ``values * model.input_scale(in_unit, in_space)``.  ``units`` is the standardised cube's
    data unit.
    """

    in_space: str
    in_unit: object
    units: str
    pvs: dict

    def model_inputs(self, model) -> np.ndarray:
        """The PV images ``(N, lon, v)`` exactly as ``model`` receives them, in its input unit."""
        values = self.pvs[model.reduction][1]
        scale = model.input_scale(self.in_unit, self.in_space) if hasattr(model, "input_scale") else 1.0
        return values * np.float32(scale) if scale != 1.0 else values


def prepare_inputs(cube: xr.DataArray, models: list, in_units=None, out_unit=None) -> PreparedInputs:
    """Standardise, regrid and reduce ``cube`` for ``models`` (a list sharing one grid).

    Every unit conversion (input, and output to ``out_unit`` when given) is tried for every
    model before the cube is regridded.  See :class:`PreparedInputs` for what comes back.
    """
    grid = models[0].grid
    std = standardize_cube(cube, grid, data_units=in_units, to_kelvin=False)
    in_space, in_unit, scale = input_space_for(std.attrs["units"], std.attrs, grid.rest_frequency)
    for model in models:  # every unit conversion is tried before any array work
        if hasattr(model, "input_scale") and hasattr(model, "output_scale"):
            model.input_scale(in_unit, in_space)
            if out_unit is not None:
                model.output_scale(out_unit)

    regridded = regrid_cube(std, grid)
    pvs = {}
    for model in models:
        if model.reduction not in pvs:
            pv = reduce_cube(regridded, model.reduction)
            values = np.asarray(pv.data, dtype=np.float32)
            if scale != 1.0:
                values = values * np.float32(scale)
            pvs[model.reduction] = (pv, values.reshape((-1,) + grid.pv_shape))
    return PreparedInputs(in_space=in_space, in_unit=in_unit, units=std.attrs["units"], pvs=pvs)


def _runner(model, device: torch.device):
    """An eval-mode module on ``device`` and a function restoring ``model`` afterwards."""
    fast = None
    if not getattr(model, "inference_only", False):
        try:
            fast = optimize_for_inference(model)  # a faster eval-only copy; the user's model is untouched
        except (TypeError, ValueError, RuntimeError):
            fast = None
    if fast is not None:
        return fast.to(device), (lambda: None)
    modes = {module: module.training for module in model.modules()}
    try:
        original = next(model.parameters()).device
    except StopIteration:
        original = device
    model.eval()
    model.to(device)

    def restore() -> None:
        model.to(original)
        for module, mode in modes.items():
            module.training = mode

    return model, restore


def _run(model, pv: np.ndarray, in_unit, in_space: str, out_unit, batch_size: int, device) -> np.ndarray:
    """Run one model over PV images ``(N, lon, v)``; returns ``(N, outputs, distance, lon)`` float32
    (densities in ``out_unit``, then velocities in km/s for two-output models)."""
    runner, restore = _runner(model, device)
    grid = model.grid
    channels = len(getattr(model, "outputs", ("density",)))
    out = np.empty((pv.shape[0], channels, grid.distance.steps, grid.lon.steps), dtype=np.float32)
    dtype = next(runner.parameters()).dtype
    try:
        with torch.inference_mode():
            for start in range(0, pv.shape[0], batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pv[start:start + batch_size]))
                batch = batch.to(device=device, dtype=dtype)[:, None]
                result = runner.call_in_units(batch, in_unit, out_unit, in_space=in_space, reduce=False)
                out[start:start + batch_size] = result.float().cpu().numpy()
    finally:
        restore()
    return out


def _with_consistency(density, output, model, prepared, out_unit, shape, dims, coords) -> xr.Dataset:
    """The reversion of a two-output model with its data-consistency maps (see :func:`revert`)."""
    pv_da = prepared.pvs[model.reduction][0]
    observed = torch.from_numpy(np.ascontiguousarray(prepared.model_inputs(model))).float()[:, None]
    maps = torch.from_numpy(output).float()
    maps = torch.cat([maps[:, :1] / model.output_scale(out_unit), maps[:, 1:]], dim=1)  # model units
    with torch.no_grad():
        model_pv = reobserve(model, maps, observed)
    back = 1.0 / model.input_scale(prepared.in_unit, prepared.in_space)  # model input unit -> the cube's
    pv_dims = pv_da.dims
    pv_coords = {name: pv_da.coords[name] for name in pv_dims if name in pv_da.coords}
    pv_attrs = {"units": prepared.units}
    observed_np = (observed[:, 0].numpy() * back).reshape(pv_da.shape)
    model_np = (model_pv[:, 0].numpy() * back).reshape(pv_da.shape)
    attrs = dict(density.attrs)
    exact = model.input_space == "v_density"
    attrs["forward_model"] = ("TopDownObserver (v_density: exact for one velocity per pixel)" if exact
                              else "TopDownObserver optically thin surrogate (scale fitted or learned)")
    return xr.Dataset(
        {
            "density": density,
            "velocity_los": (dims, output[:, 1].reshape(shape), {"units": "km / s",
                                                            "long_name": "H2-weighted line-of-sight velocity"}),
            "pv": (pv_dims, observed_np.astype(np.float32), {**pv_attrs, "long_name": "observed PV image"}),
            "pv_model": (pv_dims, model_np.astype(np.float32),
                         {**pv_attrs, "long_name": "PV image re-observed from the reverted maps"}),
            "pv_residual": (pv_dims, (observed_np - model_np).astype(np.float32),
                            {**pv_attrs, "long_name": "observed minus re-observed PV"}),
        },
        coords={**coords, **pv_coords},
        attrs=attrs,
    )


def _source(attrs: dict) -> str:
    for key in _SOURCE_KEYS:
        if attrs.get(key):
            return str(attrs[key])
    return "unknown"


def revert(cube: xr.DataArray, model_or_models, units="Msun/pc3", in_units=None, batch_size: int = 8,
           device=None, column_consistent: bool = False):
    """Revert a PPV cube into a top-down density map.

    Parameters
    ----------
    cube:
        Cube ``(extra?, lon, lat, velocity)`` (any dim order, any coordinate units, one
        optional leading stack dim); data in K, mK, Jy/sr, Jy/beam (with
        ``attrs["beam_fwhm"]`` arcsec) or velocity-resolved column density, NaN where
        unobserved.  It must cover the model's lon, lat and velocity window.
    model_or_models:
        A :class:`~iris_nb.model.Reverter`, or a list/tuple of them sharing one grid.
    units:
        Output density unit: a mass density (``"Msun/pc3"``, ``"g/cm3"``) or an H2 number
        density (``"cm-3"``).
    in_units:
        Unit of the cube data, overriding ``cube.attrs["units"]``.
    batch_size:
        PV images per network call.
    device:
        Torch device; default cuda if available, else mps, else cpu.
    column_consistent:
        For velocity-resolved column models (input space ``"v_density"``): rescale each longitude's
        reverted column to the PV image's velocity integral (the observed H2 column, exact for
        such data; :func:`~iris_nb.model.consistency.column_consistent`).  Refused for
        brightness models.

    Returns
    -------
    One model: DataArray ``(extra?, distance, lon)`` (pc, deg) in ``units``.  One two-output
    model (``outputs=("density", "velocity")``, or a :class:`~iris_nb.model.rim.RIM`): a Dataset
    with ``density``, ``velocity_los`` (the velocity map, km/s) and the data-consistency maps on ``(extra?, lon,
    velocity)`` in the cube's units: ``pv`` (the reduced cube the model saw), ``pv_model`` (the
    PV re-observed from the two maps by :func:`reobserve`) and ``pv_residual`` (``pv -
    pv_model``: where the reversion does not explain the data).  Several: a
    Dataset with ``mean`` and ``std`` ``(extra?, distance, lon)`` over the members and the
    per-model maps ``members`` ``(member, extra?, distance, lon)``.  Attrs record the model
    provenance (JSON), grid, reduction, iris_nb version, input source and time.

    Warns
    -----
    :class:`~iris_nb.diagnose.OutOfDistributionWarning`, once per call, naming each statistic
    of the PV image that lies outside the range of the model's training inputs (for an
    ensemble, outside the union of its members' ranges); nothing for models without
    ``input_statistics``.  ``cube.iris.diagnose(model)`` shows the whole comparison.
    """
    models, ensemble = check_models(model_or_models)
    grid = models[0].grid
    if column_consistent and any(getattr(m, "input_space", None) != "v_density" for m in models):
        raise ValueError("column_consistent=True needs velocity-resolved column models (input_space='v_density'); "
                         "a brightness PV does not give the H2 column without the excitation")
    out_unit = parse_unit(units, "output density units")
    density_scale(out_unit, "kg / m3")  # raises if not a (number) density
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = best_device(device)
    prepared = prepare_inputs(cube, models, in_units=in_units, out_unit=out_unit)
    in_space, in_unit, pvs = prepared.in_space, prepared.in_unit, prepared.pvs

    from .diagnose import warn_out_of_distribution

    warn_out_of_distribution(prepared, models, ensemble)
    outputs = [_run(m, pvs[m.reduction][1], in_unit, in_space, out_unit, int(batch_size), device) for m in models]
    if column_consistent:
        for model, output in zip(models, outputs):
            scale = model.output_scale(out_unit)
            density = torch.from_numpy(output[:, :1] / scale)
            pv_model = torch.from_numpy(np.ascontiguousarray(prepared.model_inputs(model)))[:, None]
            output[:, :1] = _column_consistent(model, density, pv_model).numpy() * scale
    maps = [o[:, 0] for o in outputs]

    pv = pvs[models[0].reduction][0]
    lead = [pv.dims[0]] if pv.ndim == 3 else []
    dims = tuple(lead) + ("distance", "lon")
    coords = {name: grid.coord(name) for name in ("distance", "lon")}
    if lead and lead[0] in pv.coords:
        coords[lead[0]] = pv.coords[lead[0]]
    shape = tuple(pv.shape[:1] if lead else ()) + grid.top_down_shape
    attrs = {
        "units": out_unit.to_string() if isinstance(units, u.UnitBase) else str(units),
        "grid": grid.name,
        "observer_distance": grid.observer_distance,
        "grid_json": json.dumps(grid.to_dict()),
        "reduction": ",".join(sorted({m.reduction for m in models})),
        "iris_nb_version": __version__,
        "input_source": _source(cube.attrs),
        "input_units": prepared.units,
        "all_nan_fraction": float(pv.attrs.get("all_nan_fraction", 0.0)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if column_consistent:
        attrs["column_consistent"] = 1
    provenance = [json.dumps(getattr(m, "provenance", {}) or {}, sort_keys=True, default=str) for m in models]
    if not ensemble:
        attrs["model_provenance"] = provenance[0]
        density = xr.DataArray(maps[0].reshape(shape), dims=dims, coords=coords, attrs=attrs, name="density")
        if outputs[0].shape[1] == 1:
            return density
        return _with_consistency(density, outputs[0], models[0], prepared, out_unit, shape, dims, coords)
    members = np.stack([m.reshape(shape) for m in maps])
    attrs["model_provenance"] = "[" + ", ".join(provenance) + "]"
    var_attrs = {"units": attrs["units"]}
    return xr.Dataset(
        {
            "mean": (dims, members.mean(axis=0), var_attrs),
            "std": (dims, members.std(axis=0), var_attrs),
            "members": (("member",) + dims, members, var_attrs),
        },
        coords={**coords, "member": np.arange(len(models))},
        attrs=attrs,
    )

