"""The settings of litter: :class:`LitterConfig` (which litter stores, how often each adds one of
its PV images to a training input, and a factor on every image), the ``litter`` field of a run.
:class:`iris_nb.sim.litter.Litter` adds the images; this module only describes and checks them.

Litter stores are dataset stores of gas in front of or behind the CMZ (written with
``model=near_side_litter`` or ``far_side_litter``).  During training each input independently
receives one PV image of each store with that store's probability ``p``, times ``scale``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np

from .._files import ConfigFiles

__all__ = ["LitterConfig", "DEFAULT_P", "check_p", "check_scale"]

DEFAULT_P = 0.5
"""Probability that an input receives one image of a litter store when none is given."""
_FIELDS = ("paths", "p", "scale")


def _number(value, what: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{what} {expected}; got {value!r}")
    return float(value)


def check_p(value, what: str = "the litter probability p") -> float:
    """``value`` as a float probability in [0, 1], else ValueError naming ``what``."""
    expected = "is the probability that an input receives one of the store's images, a number in [0, 1]"
    p = _number(value, what, expected)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} {expected}; got {value!r}")
    return p


def check_scale(value, what: str = "the litter scale") -> float:
    """``value`` as a float factor >= 0 on every litter image, else ValueError naming ``what``."""
    expected = "multiplies every litter image and must be a number >= 0"
    scale = _number(value, what, expected)
    if scale < 0:
        raise ValueError(f"{what} {expected}; got {value!r}")
    return scale


def _paths(value) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"LitterConfig.paths must be a litter store path or a non-empty list of paths, got {value!r}; "
                         "write a store with iris_nb.data.write_dataset(path, n, litter_grid(grid, 'near'), "
                         "model=near_side_litter)")
    paths = []
    for k, item in enumerate(value):
        item = os.fspath(item) if isinstance(item, os.PathLike) else item
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"LitterConfig.paths[{k}] must be a non-empty path, got {item!r}")
        paths.append(item)
    return tuple(paths)


@dataclasses.dataclass(frozen=True)
class LitterConfig(ConfigFiles):
    """Which litter stores to draw from, how often, and how bright; validates itself and
    round-trips through JSON/YAML.

    Parameters
    ----------
    paths:
        Litter store paths (one path or a non-empty sequence), kept as a tuple of str.
    p:
        Probability (in [0, 1]) that a training input receives one PV image of a store: one
        number for every store, or a tuple with one per store (default 0.5).
    scale:
        Factor (>= 0) on every litter image, default 1.

    ``config["paths"]``, ``config["p"]``, ``config["scale"]``, ``dict(config)`` and
    ``{**config}`` work as they did when the litter of a run was a dict.

    Examples
    --------
    >>> LitterConfig(["near.zarr", "far.zarr"], p=[0.3, 0.3])
    LitterConfig(paths=('near.zarr', 'far.zarr'), p=(0.3, 0.3), scale=1.0)
    >>> LitterConfig.coerce({"paths": "near.zarr", "p": 0.2}).to_dict()
    {'paths': ['near.zarr'], 'p': 0.2}
    """

    paths: tuple[str, ...]
    p: float | tuple[float, ...] = DEFAULT_P
    scale: float = 1.0

    def __post_init__(self) -> None:
        paths = _paths(self.paths)
        p = self.p
        if isinstance(p, (list, tuple)):
            if len(p) != len(paths):
                raise ValueError(f"LitterConfig has {len(paths)} paths but {len(p)} probabilities p ({list(p)}); "
                                 "give one p per path or a single number")
            p = tuple(check_p(item, f"LitterConfig.p[{k}] (store {path})")
                      for k, (item, path) in enumerate(zip(p, paths)))
        else:
            p = check_p(p, "LitterConfig.p")
        scale = check_scale(self.scale, "LitterConfig.scale")
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "scale", scale)

    @property
    def ps(self) -> tuple[float, ...]:
        """One probability per store (``p`` repeated when it is a single number)."""
        return self.p if isinstance(self.p, tuple) else (self.p,) * len(self.paths)

    @property
    def hit_fraction(self) -> float:
        """Probability that an input receives litter from at least one store, ``1 - prod(1 - p)``."""
        return 1.0 - float(np.prod([1.0 - p for p in self.ps]))

    def replace(self, **changes) -> "LitterConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ the old dict form
    def __getitem__(self, key: str):
        if key not in _FIELDS:
            raise KeyError(f"{key!r}: a LitterConfig has the fields {list(_FIELDS)}")
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        """The keys of :meth:`to_dict` (``"scale"`` only when it is not 1), so ``{**config}`` works."""
        return _FIELDS if self.scale != 1 else _FIELDS[:2]

    # ------------------------------------------------------------ dict / files
    def to_dict(self) -> dict:
        """``{"paths": [...], "p": number or [one per store]}`` plus ``"scale"`` when it is not 1
        (the form run files have always held); :meth:`from_dict` inverts it."""
        out = {"paths": list(self.paths), "p": list(self.p) if isinstance(self.p, tuple) else self.p}
        if self.scale != 1:
            out["scale"] = self.scale
        return out

    @classmethod
    def from_dict(cls, data) -> "LitterConfig":
        """Build a config from a mapping ``{paths, p, scale}``; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise TypeError(f"litter is described by a dict {{'paths': [...], 'p': 0.5}}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown litter keys {unknown}; known keys are {sorted(_FIELDS)}")
        if "paths" not in data:
            raise ValueError(f"litter needs 'paths': the litter store(s) to draw from; got keys {sorted(data)}")
        return cls(**dict(data))

    @classmethod
    def coerce(cls, value) -> "LitterConfig | None":
        """``None`` (no litter), a LitterConfig, or a mapping ``{paths, p, scale}`` (as YAML gives)."""
        if value is None or isinstance(value, LitterConfig):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(f"litter must be None, a LitterConfig or a dict {{'paths': [...], 'p': 0.5}}, "
                        f"got {type(value).__name__} {value!r}")
