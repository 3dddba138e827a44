"""Sky, velocity and distance grids shared by observers, models and cubes.

A :class:`Grid` fixes the four axes of the problem (heliocentric distance, Galactic
longitude and latitude, LSR velocity), the observer's distance from the Galactic
Centre, the spectral line and the telescope beam.  Every axis is described by the
*edges* of its window and a number of equal pixels; pixel centres sit half a step
inside the edges.

Units: distance and observer_distance in pc, lon and lat in deg, velocity in km/s
(v_LSR, radio convention), rest_frequency in GHz, beam_fwhm in arcsec.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._files import ConfigFiles, check_fields

__all__ = ["Axis", "Grid", "SEDIGISM", "SMALL", "PRESETS", "get_grid", "galactocentric_xy"]

AXIS_NAMES = ("distance", "lon", "lat", "velocity")
AXIS_UNITS = {"distance": "pc", "lon": "deg", "lat": "deg", "velocity": "km/s"}


@dataclasses.dataclass(frozen=True)
class Axis:
    """A window ``[start, stop]`` cut into ``steps`` equal pixels.

    ``start`` and ``stop`` are the outer pixel edges, in the axis unit.
    """

    start: float
    stop: float
    steps: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.stop)):
            raise ValueError(f"axis edges must be finite, got start={self.start}, stop={self.stop}")
        if self.stop <= self.start:
            raise ValueError(
                f"axis stop ({self.stop}) must be larger than start ({self.start}); "
                "give the window from its lower to its upper edge"
            )
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"axis steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "stop", float(self.stop))
        object.__setattr__(self, "steps", int(self.steps))

    @property
    def step(self) -> float:
        """Pixel width, in the axis unit."""
        return (self.stop - self.start) / self.steps

    @property
    def span(self) -> float:
        """Width of the whole window, in the axis unit."""
        return self.stop - self.start

    def centers(self) -> np.ndarray:
        """Pixel centres, ascending, shape ``(steps,)``, float64."""
        return self.start + (np.arange(self.steps) + 0.5) * self.step

    def edges(self) -> np.ndarray:
        """Pixel edges, ascending, shape ``(steps + 1,)``, float64."""
        return np.linspace(self.start, self.stop, self.steps + 1)

    def with_steps(self, steps: int) -> "Axis":
        """The same window cut into another number of pixels."""
        return Axis(self.start, self.stop, steps)


@dataclasses.dataclass(frozen=True)
class Grid(ConfigFiles):
    """The geometry a model is trained on and a cube is regridded to.

    Parameters
    ----------
    distance, lon, lat, velocity:
        :class:`Axis` windows in pc (heliocentric), deg, deg and km/s.
    observer_distance:
        Sun - Galactic Centre distance R0, pc.
    rest_frequency:
        Rest frequency of the spectral line, GHz.
    beam_fwhm:
        Full width at half maximum of the Gaussian telescope beam, arcsec.
    line:
        Name of the spectral line, e.g. ``"13CO(2-1)"``; used to warn when a cube of
        another line is reverted.
    name:
        Optional preset name, kept for display only (not part of equality).
    """

    distance: Axis
    lon: Axis
    lat: Axis
    velocity: Axis
    observer_distance: float = 8277.0
    rest_frequency: float = 220.3986842
    beam_fwhm: float = 30.0
    line: str = "13CO(2-1)"
    name: str = dataclasses.field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for axis_name in AXIS_NAMES:
            value = getattr(self, axis_name)
            if isinstance(value, dict):
                value = Axis(**value)
                object.__setattr__(self, axis_name, value)
            if not isinstance(value, Axis):
                raise TypeError(f"Grid.{axis_name} must be an Axis, got {type(value).__name__}")
        for scalar in ("observer_distance", "rest_frequency"):
            value = float(getattr(self, scalar))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Grid.{scalar} must be a positive number, got {value}")
            object.__setattr__(self, scalar, value)
        beam = float(self.beam_fwhm)
        if not (math.isfinite(beam) and beam >= 0):
            raise ValueError(f"Grid.beam_fwhm must be >= 0 arcsec, got {beam}")
        object.__setattr__(self, "beam_fwhm", beam)
        if self.lon.start <= -180 or self.lon.stop > 180:
            raise ValueError(
                f"Grid.lon window [{self.lon.start}, {self.lon.stop}] deg must lie in (-180, 180]; "
                "wrap longitudes above 180 deg by subtracting 360"
            )
        if self.lat.start < -90 or self.lat.stop > 90:
            raise ValueError(f"Grid.lat window [{self.lat.start}, {self.lat.stop}] deg must lie in [-90, 90]")
        if self.distance.start <= 0:
            raise ValueError(f"Grid.distance must start beyond the observer (> 0 pc), got {self.distance.start}")

    # ----------------------------------------------------------------- shape
    @property
    def shape(self) -> dict[str, int]:
        """Pixels per axis, ``{"distance": .., "lon": .., "lat": .., "velocity": ..}``."""
        return {name: getattr(self, name).steps for name in AXIS_NAMES}

    @property
    def pv_shape(self) -> tuple[int, int]:
        """Shape of a PV image ``(lon, velocity)``."""
        return (self.lon.steps, self.velocity.steps)

    @property
    def ppv_shape(self) -> tuple[int, int, int]:
        """Shape of a PPV cube ``(lon, lat, velocity)``."""
        return (self.lon.steps, self.lat.steps, self.velocity.steps)

    @property
    def top_down_shape(self) -> tuple[int, int]:
        """Shape of a top-down map ``(distance, lon)``."""
        return (self.distance.steps, self.lon.steps)

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel centres of every axis, float64, in the axis units."""
        return {name: getattr(self, name).centers() for name in AXIS_NAMES}

    def coord(self, name: str):
        """An xarray-ready coordinate ``(name, centres, {"units": ...})``."""
        return (name, getattr(self, name).centers(), {"units": AXIS_UNITS[name]})

    def replace(self, **changes) -> "Grid":
        """A copy with some fields changed (``grid.replace(lon=Axis(-1, 1, 64))``)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """Plain-JSON dictionary; :meth:`from_dict` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Grid":
        """Build a grid from :meth:`to_dict` output (or a preset name)."""
        if isinstance(data, str):
            return get_grid(data)
        check_fields(cls, data, "Grid")
        missing = [name for name in AXIS_NAMES if name not in data]
        if missing:
            raise ValueError(f"a grid needs the axes {list(AXIS_NAMES)}; missing {missing}")
        return cls(**data)

    def __repr__(self) -> str:
        axes = ", ".join(
            f"{n}={a.steps}x[{a.start:g}, {a.stop:g}] {AXIS_UNITS[n]}"
            for n, a in ((n, getattr(self, n)) for n in AXIS_NAMES)
        )
        return (
            f"Grid({self.name!r}: {axes}; R0={self.observer_distance:g} pc, "
            f"{self.line} at {self.rest_frequency:.7g} GHz, beam {self.beam_fwhm:g}\")"
        )


SEDIGISM = Grid(
    distance=Axis(8277.0 - 225.0, 8277.0 + 225.0, 512),
    lon=Axis(-1.5, 1.5, 512),
    lat=Axis(-0.375, 0.375, 128),
    velocity=Axis(-200.0, 200.0, 512),
    name="SEDIGISM",
)
"""The paper's grid: SEDIGISM 13CO(2-1), 512 lon x 128 lat x 512 velocity x 512 distance."""

SMALL = SEDIGISM.replace(
    distance=SEDIGISM.distance.with_steps(128),
    lon=SEDIGISM.lon.with_steps(128),
    lat=SEDIGISM.lat.with_steps(32),
    velocity=SEDIGISM.velocity.with_steps(128),
    name="SMALL",
)
"""Same window as :data:`SEDIGISM` at 128 lon x 32 lat x 128 velocity x 128 distance."""

PRESETS = {"SEDIGISM": SEDIGISM, "SMALL": SMALL}


def get_grid(grid: "Grid | str | dict") -> Grid:
    """Return a :class:`Grid` from a grid, a preset name (case-insensitive) or a dict."""
    if isinstance(grid, Grid):
        return grid
    if isinstance(grid, str):
        key = grid.upper()
        if key not in PRESETS:
            raise ValueError(f"unknown grid preset {grid!r}; choose one of {sorted(PRESETS)} or pass a Grid")
        return PRESETS[key]
    if isinstance(grid, dict):
        return Grid.from_dict(grid)
    raise TypeError(f"expected a Grid, a preset name or a dict, got {type(grid).__name__}")


def galactocentric_xy(distance, lon, observer_distance: float = 8277.0):
    """Galactocentric Cartesian position of points given by heliocentric distance and longitude.

    The Galactic Centre is at the origin, the Sun at ``(x, y) = (0, -R0)``, ``+y`` points from
    the Sun towards the Galactic Centre and ``+x`` towards positive Galactic longitude
    (``x = d sin l``, ``y = d cos l - R0``).

    ``distance`` (pc) and ``lon`` (deg) broadcast against each other (for a top-down map use
    ``distance[:, None]`` and ``lon[None, :]``); returns ``(x, y)`` in pc.
    """
    d = np.asarray(distance, dtype=float)
    l_rad = np.deg2rad(np.asarray(lon, dtype=float))
    return d * np.sin(l_rad), d * np.cos(l_rad) - observer_distance
