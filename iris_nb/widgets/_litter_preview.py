"""The preview of :class:`~iris_nb.widgets.litter.LitterPicker`: which side of the CMZ a litter
store fills, the image the litter adds to a PV image (mean or one seeded draw), and the caption.

Plain functions of store paths, probabilities and an optional cube; the picker caches their
results and puts them into its widgets.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..data.datasets import PreObservedDataset, observation_scale
from .base import render_png

__all__ = ["SIDE_LABELS", "PREVIEWS", "store_side", "preview_unit", "open_litter", "draw_preview", "caption"]

SIDE_LABELS = {"near": "foreground (near side)", "far": "background (far side)", "": "side not recorded"}
PREVIEWS = ("mean", "example")


def store_side(info) -> str:
    """``"near"``, ``"far"`` or ``""`` (unknown): the side of the CMZ a store's gas model fills.

    ``info`` is a :class:`~iris_nb.data.layout.StoreInfo`; the side is read from the gas model
    recorded in the store (``near_side_litter``, ``far_side_litter`` or ``make_litter`` with a
    ``side`` keyword).
    """
    name = str(info.model).rsplit(".", 1)[-1]
    if name in ("near_side_litter", "far_side_litter"):
        return name.split("_", 1)[0]
    side = info.model_kwargs.get("side") if name == "make_litter" else None
    return side if side in ("near", "far") else ""


def preview_unit(store_unit: str, cube: xr.DataArray | None) -> tuple[str, bool]:
    """Unit of the preview image and whether the cube's PV is part of it (its unit converts)."""
    try:
        observation_scale(store_unit, cube.attrs["units"])
    except (AttributeError, ValueError):  # no cube, or a cube in another kind of unit
        return store_unit, False
    return str(cube.attrs["units"]), True


def open_litter(path: str, unit: str):
    """``(PreObservedDataset of all samples, mean image (lon, v) as float64)`` in ``unit``."""
    from ..data.layout import open_store

    data = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0,
                              units={"observation": unit})
    factor = observation_scale(data.info.units["observation"], unit)
    mean = open_store(path)["observation"].mean("sample").values.astype(np.float64) * factor
    return data, mean


def draw_preview(kind: str, paths, parts, ps, scale: float, seed: int, info, unit: str, cube=None,
                 figsize=(5.5, 3.4), dpi: int = 90):
    """The preview of litter from ``parts`` (``open_litter`` results, one per path) on a PV image.

    ``kind``: ``"mean"`` (``scale * sum(p * mean image)``) or ``"example"`` (one draw of
    :class:`~iris_nb.sim.litter.Litter` seeded with ``seed``).  The base image is the cube
    ``(lon, lat, velocity)`` reduced like the stores (``info.reduction``) when given, else zeros
    on ``info.grid``.  Returns ``(png bytes, pv DataArray (lon, velocity) in unit, hit paths or
    None, whether the cube is in the image)``.
    """
    from ..cube import reduce_cube
    from ..plot import pv_image
    from ..sim.litter import Litter

    if cube is not None:
        base = reduce_cube(cube, info.reduction)
        lon, velocity, image = base["lon"].values, base["velocity"].values, base.values.astype(np.float64)
    else:
        lon, velocity = info.grid.lon.centers(), info.grid.velocity.centers()
        image = np.zeros(info.grid.pv_shape)
    if kind == "mean":
        image = image + scale * sum(p * mean for p, (_, mean) in zip(ps, parts))
        what, hits = "mean litter image, weighted by p", None
    else:
        litter = Litter([data for data, _ in parts], p=list(ps), scale=scale)
        drawn, hit = litter.draw(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        image = image + drawn[0, 0].numpy()
        what, hits = f"one draw (seed {seed})", [path for path, h in zip(paths, hit[:, 0]) if bool(h)]
    with_cube = cube is not None
    pv = xr.DataArray(image, dims=("lon", "velocity"),
                      coords={"lon": ("lon", lon, {"units": "deg"}),
                              "velocity": ("velocity", velocity, {"units": "km/s"})},
                      attrs={"units": unit, "long_name": "cube + litter" if with_cube else "litter"})
    title = f"{'cube + ' if with_cube else ''}{what}"
    png = render_png(lambda ax: pv_image(pv, ax=ax, title=title), figsize, dpi)
    return png, pv, hits, with_cube


def caption(paths, ps, sides: dict, hit_fraction: float, scale: float, hits, cube, with_cube: bool) -> str:
    """HTML caption: each store's side and p, the chance of any litter, the scale, the draw's stores."""
    parts = [f"{html.escape(Path(path).name)} ({SIDE_LABELS[sides[path]].split(' (')[0] if sides[path] else '?'}) "
             f"p = {p:g}" for path, p in zip(paths, ps)]
    text = (f"{'; '.join(parts)}. A training input receives litter from at least one store with probability "
            f"<b>{100 * hit_fraction:.1f}%</b>")
    if scale != 1.0:
        text += f"; litter images x{scale:g}"
    if hits is not None:
        names = ", ".join(html.escape(Path(path).name) for path in hits) or "no store"
        text += f"; this draw got litter from: {names}"
    if cube is not None and not with_cube:
        text += (f"; the cube is in {html.escape(str(cube.attrs.get('units')))}, which does not convert "
                 "to the litter's unit, so the litter is shown alone")
    return f"<small>{text}.</small>"
