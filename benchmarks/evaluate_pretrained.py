"""How good is a trained Reverter on fields it never saw, in its training family and outside it?

Everything goes through the public path a user takes: a cube ``(lon, lat, velocity)`` in K,
``cube.iris.revert(model, units="Msun/pc3")`` (standardise, regrid, reduce, the
out-of-distribution check, the network), compared with the true top-down H2 density
``iris_nb.sim.columnize(field)`` ``(distance, lon)`` in Msun/pc3.

1. **In-family**: ``--n`` fields ``make_cmz(grid, seed=10_000_000 + i)``.  The training stores
   draw their seeds with ``iris_nb.data.store.sample_seed(2026, i)``, hashed 63-bit numbers, so
   small plain seeds such as these (and ``20_000_000 + i`` for the baseline set) are never
   training fields.  Observed with ``LineObserver(grid)`` (non-LTE escape probability), or
   ``excitation="lte"`` when ``model.provenance`` says the model was trained on LTE
   observations (``--excitation`` overrides).
2. **Out-of-family**: ``--snapshots`` AREPO-layout HDF5 snapshots of a different gas model
   (below), written to a temporary folder and read back with ``iris_nb.sim.from_arepo`` on the
   model's grid; observed, noised, reverted and compared exactly as in 1.

Noise: survey noise drawn on the cube, ``iris_nb.sim.Noise(grid=grid, fade=False)`` in
``mode="cube"`` (SEDIGISM's 0.9 K per 0.25 km/s channel scaled to the grid's channels,
beam-correlated), one seeded draw per field; ``--noise model`` uses the noise the model was
trained with (its provenance, without fade), ``--noise none`` none.

Metrics per field and aggregated per set: ScaledDensityLoss (``n = 1e-19 kg/m3`` in Msun/pc3)
of the reversion and of the best constant map (the pixel-wise mean truth of 32 fields
``make_cmz(grid, seed=20_000_000 + i)``; the same map for both sets), their ratio (sum of
losses over sum of baseline losses, and the median of per-field ratios), and the loss of an
empty map (``loss_ratio_empty``: out of family the family's mean map can be a worse guess than
nothing, so a ratio to it alone flatters a model that predicts little); the Pearson
correlation of ``asinh(rho / n)`` over all pixels of all fields pooled (and its per-field
median); the relative error of the H2 mass in the window, with cell volumes ``d^2 dd dl db``
(they vary by +-3% over the window); and how many fields made ``revert`` warn
``iris_nb.OutOfDistributionWarning``.

The out-of-family gas model, ``barred_gas`` (particles, as an AREPO snapshot holds cells):
gas on closed orbits in a barred potential, the bar along the snapshot's x axis and seen at
``bar_angle`` (15-45 deg) from the Sun-GC line.  Orbits are nested homothetic ellipses traversed at
constant specific angular momentum ``L(a) = v_c(sqrt(a b)) sqrt(a b)`` with the rotation curve
of a cored logarithmic potential ``v_c = v0 R / sqrt(R^2 + Rc^2)``, so the speed is largest at
the ends of the minor axis.  The **x2 disc** fills orbits from ``x2_inner`` to ``x2_inner +
x2_width`` (70-220 pc) with a power-law surface profile, a bisymmetric (m = 2) density
modulation along the orbit, a sech^2 vertical profile that flares as ``sqrt(a)``, its major
axis at ``x2_misalignment`` (60-120 deg) from the bar and its plane tilted by up to 6 deg; the
**x1 gas** lies on bar-aligned orbits (axis ratio 0.25-0.5) from ~250 pc out to 1 kpc with an
exponential profile and an inflow across the orbits; **clumps** are Plummer spheres with a
power-law mass function placed on those orbits and moving with them; a **diffuse** exponential
disc rotates on circular orbits.  Every cell also gets an independent isotropic Gaussian
velocity (3-12 km/s).  Temperature, H2 fraction and CO abundance are smooth functions of the
local density.  Unlike ``make_cmz``: a thick disc of orbits instead of a thin ring with lanes,
the m = 2 rather than m = 1 asymmetry, a plane tilt instead of a twist, no dust lanes, gas on
x1 orbits, Plummer clumps anywhere on the orbits, cell-scale rather than k^-4 turbulence.

    python benchmarks/evaluate_pretrained.py                          # cmz-small, 24 + 8 fields
    python benchmarks/evaluate_pretrained.py --model run/model.pt --n 6 --snapshots 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import iris_nb
from iris_nb.sim import LineObserver, Noise, columnize, from_arepo, make_cmz
from iris_nb.train.losses import ScaledDensityLoss

RESULTS = Path(__file__).resolve().parent / "results"
IN_FAMILY_SEED = 10_000_000
BASELINE_SEED = 20_000_000
SNAPSHOT_SEED = 30_000_000
NOISE_SEED = 40_000_000
OOD_WARNING = getattr(iris_nb, "OutOfDistributionWarning", None)

# ----------------------------------------------------------------------- the model under test


def load_model(spec: str):
    """A Reverter from a file path or a shipped pretrained name (``"cmz-small"``)."""
    if Path(spec).is_file():
        return iris_nb.Reverter.load(spec)
    from iris_nb.model.pretrained import available
    if spec in available():
        return iris_nb.pretrained(spec)
    raise ValueError(f"--model {spec!r} is neither a model file nor a shipped model ({available()})")


def training_excitation(provenance: dict) -> tuple[str | None, str]:
    """``("lte" | "escape" | None, reason)``: the excitation the model's training data used.

    Read from the provenance text: an ``excitation`` entry, or ``(lte)`` / ``(escape)`` in the
    ``trained_on`` line that ``scripts/train_pretrained.py`` writes.  A provenance that names
    ``LineObserver`` but no excitation was written before the observer had non-LTE excitation,
    when it only did LTE (the shipped ``cmz-small``).
    """
    text = json.dumps(provenance or {}, default=str).lower()
    for name in ("lte", "escape"):
        if f'"excitation": "{name}"' in text or f"({name})" in text:
            return name, f"provenance says excitation {name}"
    if "lineobserver" in text and "excitation" not in text and "escape" not in text:
        return "lte", "provenance names LineObserver but no excitation: written before non-LTE (LTE only then)"
    return None, "provenance does not say; using the observer's default"


def provenance_summary(model) -> dict:
    """The parts of ``model.provenance`` that say what it was trained on and how well it did."""
    prov = dict(getattr(model, "provenance", None) or {})
    keep = ("training_script", "trained_on", "test_metrics", "iris_nb_version", "seconds", "device")
    out = {key: prov[key] for key in keep if key in prov}
    run = prov.get("run") or {}
    if run:
        out["noise"] = run.get("noise")
        out["loss"] = (run.get("training") or {}).get("loss")
        out["epochs"] = (run.get("training") or {}).get("epochs")
    out["grid"] = model.grid.name
    out["parameters"] = int(sum(p.numel() for p in model.parameters()))
    out["input_statistics"] = getattr(model, "input_statistics", None) is not None
    return out


def make_noise(kind: str, grid, model) -> Noise | None:
    """Cube noise without fade: ``"survey"`` (SEDIGISM), ``"model"`` (as trained) or ``"none"``."""
    if kind == "none":
        return None
    if kind == "survey":
        return Noise(grid=grid, fade=False)
    trained = ((getattr(model, "provenance", None) or {}).get("run") or {}).get("noise")
    if not trained:
        raise ValueError("--noise model: the model's provenance records no training noise; use --noise survey")
    return Noise.from_config({**trained, "fade": False}, grid=grid)


# ----------------------------------------------------------------------------- metrics


def window_mass(top_down: np.ndarray, grid) -> float:
    """H2 mass (Msun) in the window of a latitude-mean density map ``(distance, lon)`` in Msun/pc3:
    ``sum rho dd (d dl)(d db_window)`` with angles in rad."""
    d = grid.distance.centers()[:, None]
    dl = math.radians(grid.lon.step)
    db = math.radians(grid.lat.stop - grid.lat.start)
    return float(np.sum(top_down.astype(np.float64) * grid.distance.step * d * dl * d * db))


class Pooled:
    """Running sums for a Pearson correlation over many maps."""

    def __init__(self) -> None:
        self.sums = np.zeros(6)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
        self.sums += [x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]

    def correlation(self) -> float:
        n, sx, sy, sxx, syy, sxy = self.sums
        if n == 0:
            return float("nan")
        var = (sxx - sx * sx / n) * (syy - sy * sy / n)
        return float((sxy - sx * sy / n) / math.sqrt(var)) if var > 0 else float("nan")


def compare(pred: np.ndarray, truth: np.ndarray, baseline: np.ndarray, grid, loss: ScaledDensityLoss,
            pooled: Pooled) -> dict:
    """Metrics of one reversion ``pred`` against ``truth`` (both ``(distance, lon)``, Msun/pc3)."""
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)[None, None]  # noqa: E731
    value = float(loss(as_t(pred), as_t(truth)))
    base = float(loss(as_t(baseline), as_t(truth)))
    empty = float(loss(torch.zeros_like(as_t(truth)), as_t(truth)))
    x, y = np.arcsinh(pred / loss.n), np.arcsinh(truth / loss.n)
    pooled.add(x, y)
    single = Pooled()
    single.add(x, y)
    m_pred, m_true = window_mass(pred, grid), window_mass(truth, grid)
    return {"loss": value, "baseline_loss": base, "loss_ratio": value / base if base > 0 else float("nan"),
            "empty_loss": empty,
            "correlation": single.correlation(), "mass_true_msun": m_true, "mass_reverted_msun": m_pred,
            "mass_error": (m_pred - m_true) / m_true if m_true > 0 else float("nan")}


def aggregate(rows: list, pooled: Pooled) -> dict:
    """Set-level numbers from the per-field rows."""
    if not rows:
        return {"n": 0}
    col = lambda k: np.array([r[k] for r in rows], dtype=float)  # noqa: E731
    mass = col("mass_error")
    return {"n": len(rows), "loss": float(col("loss").mean()), "baseline_loss": float(col("baseline_loss").mean()),
            "loss_ratio": float(col("loss").sum() / col("baseline_loss").sum()),
            "loss_ratio_median": float(np.median(col("loss_ratio"))), "empty_loss": float(col("empty_loss").mean()),
            "loss_ratio_empty": float(col("loss").sum() / col("empty_loss").sum()),
            "correlation": pooled.correlation(), "correlation_median": float(np.median(col("correlation"))),
            "mass_error_mean": float(np.nanmean(mass)), "mass_error_median": float(np.nanmedian(mass)),
            "mass_error_abs_mean": float(np.nanmean(np.abs(mass))),
            "ood_warnings": int(sum(bool(r["ood_warning"]) for r in rows)),
            "ood_fraction": float(np.mean([bool(r["ood_warning"]) for r in rows])),
            "seconds_per_field": float(col("seconds").mean())}


def evaluate_field(field, model, observer, noise, noise_seed: int, baseline, loss, pooled) -> dict:
    """Observe, add noise, revert through ``cube.iris.revert`` and compare; one row of numbers."""
    start = time.perf_counter()
    grid = model.grid
    cube = observer.observe(field).transpose("lon", "lat", "velocity")
    clean_peak = float(cube.max())
    if noise is not None:
        generator = torch.Generator().manual_seed(noise_seed)
        draw = noise.draw((1,) + cube.shape, mode="cube", generator=generator)[0].numpy()
        cube = cube.copy(data=cube.values + draw.astype(cube.dtype))
    observed = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        top_down = cube.iris.revert(model, units="Msun/pc3")
    ood = [str(w.message) for w in caught if OOD_WARNING is not None and issubclass(w.category, OOD_WARNING)]
    truth = columnize(field).transpose("distance", "lon")
    if not (np.allclose(top_down["distance"], truth["distance"]) and np.allclose(top_down["lon"], truth["lon"])):
        raise RuntimeError("the reversion and the truth are on different (distance, lon) pixels")
    row = compare(top_down.transpose("distance", "lon").values, truth.values, baseline, grid, loss, pooled)
    row.update(cube_peak_k=clean_peak, ood_warning=bool(ood), ood_message=ood[0][:300] if ood else None,
               seconds_observe=observed - start, seconds=time.perf_counter() - start)
    return row


def constant_map(grid, n: int, family: dict) -> np.ndarray:
    """Pixel-wise mean truth ``(distance, lon)`` (Msun/pc3) of ``make_cmz(grid, 20_000_000 + i)``."""
    total = np.zeros((grid.distance.steps, grid.lon.steps))
    for i in range(n):
        total += columnize(make_cmz(grid, seed=BASELINE_SEED + i, **family)).transpose("distance", "lon").values
    return (total / max(n, 1)).astype(np.float32)


# ------------------------------------------------------------- the out-of-family gas model

BAR_PARAMETERS = {  # name: (low, high, unit); integers drawn from low..high
    "bar_angle": (15.0, 45.0, "deg"), "v0": (120.0, 190.0, "km/s"), "core_radius": (50.0, 130.0, "pc"),
    "x2_inner": (70.0, 130.0, "pc"), "x2_width": (30.0, 90.0, "pc"), "x2_axis_ratio": (0.55, 0.9, ""),
    "x2_misalignment": (60.0, 120.0, "deg"), "x2_slope": (-1.0, 1.5, ""), "x2_arms": (0.0, 0.8, ""),
    "x2_arm_phase": (0.0, 180.0, "deg"), "x2_mass": (1e7, 4e7, "Msun"), "tilt": (0.0, 6.0, "deg"),
    "tilt_node": (0.0, 360.0, "deg"), "scale_height": (5.0, 20.0, "pc"), "x1_inner": (150.0, 250.0, "pc"),
    "x1_scale": (200.0, 500.0, "pc"), "x1_axis_ratio": (0.25, 0.5, ""), "x1_mass_fraction": (0.2, 0.8, ""),
    "x1_inflow": (0.0, 40.0, "km/s"), "clump_count": (5, 40, ""), "clump_mass_max": (2e5, 3e6, "Msun"),
    "clump_radius": (1.5, 5.0, "pc at 1e5 Msun"), "diffuse_density": (0.1, 1.0, "Msun/pc3"),
    "dispersion": (3.0, 12.0, "km/s"), "temperature_cold": (30.0, 70.0, "K"), "temperature_warm": (100.0, 300.0, "K"),
    "h2_density": (0.5, 3.0, "Msun/pc3"), "co_density": (1.0, 10.0, "Msun/pc3"),
}
_INTEGERS = ("clump_count",)


def _logistic(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _rotation(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _tilt(angle_deg: float, node_deg: float) -> np.ndarray:
    """Rotation by ``angle_deg`` about the in-plane axis at ``node_deg`` from x."""
    axis = np.array([math.cos(math.radians(node_deg)), math.sin(math.radians(node_deg)), 0.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = math.radians(angle_deg)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


class _Orbits:
    """Nested homothetic ellipses (axis ratio ``q``) in a frame ``rotation`` (3x3, disc -> galaxy)
    with surface profile ``profile(a)``, m = 2 modulation ``arms`` at ``phase``, sech^2 height
    ``height(a)`` (pc), total mass ``mass`` (Msun) and inflow ``inflow`` (km/s) across the orbits."""

    def __init__(self, q, rotation, profile, height, mass, v_circ, a_max, arms=0.0, phase=0.0, inflow=0.0):
        self.q, self.rot, self.profile, self.height = q, rotation, profile, height
        self.arms, self.phase, self.inflow, self.v_circ = arms, math.radians(phase), inflow, v_circ
        self.a = np.linspace(1.0, a_max, 4000)
        weight = profile(self.a) * self.a * 2.0 * height(self.a)
        self.cdf = np.cumsum(weight) / weight.sum()
        # mass = A * q * 2 pi * int f(a) a 2 h(a) da (dA = q a da dE; sech^2 integrates to 2 h)
        self.amplitude = mass / (q * 2.0 * math.pi * np.trapezoid(weight, self.a))

    def sample(self, rng, n: int) -> np.ndarray:
        """``n`` positions (pc, galaxy frame) distributed like the mass."""
        a = np.interp(rng.uniform(size=n), self.cdf, self.a)
        e = rng.uniform(0, 2 * np.pi, 4 * n)
        keep = rng.uniform(size=e.size) * (1 + self.arms) < 1 + self.arms * np.cos(2 * (e - self.phase))
        e = np.resize(e[keep], n)
        z = self.height(a) * np.arctanh(rng.uniform(-0.999, 0.999, n))
        local = np.column_stack([a * np.cos(e), self.q * a * np.sin(e), z])
        return local @ self.rot.T

    def evaluate(self, pos: np.ndarray):
        """Density (Msun/pc3) and velocity (km/s, galaxy frame) at positions ``(N, 3)`` pc."""
        x, y, z = (pos @ self.rot).T
        a = np.hypot(x, y / self.q).clip(1e-3)
        e = np.arctan2(y / self.q, x)
        h = self.height(a)
        rho = self.amplitude * self.profile(a) * (1 + self.arms * np.cos(2 * (e - self.phase))) / np.cosh(z / h) ** 2
        radius = np.sqrt(self.q) * a
        ang_mom = self.v_circ(radius) * radius
        vx, vy = ang_mom / (self.q * a) * -np.sin(e), ang_mom / a * np.cos(e)
        normal = np.column_stack([np.cos(e), np.sin(e) / self.q])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        v = np.column_stack([vx - self.inflow * normal[:, 0], vy - self.inflow * normal[:, 1], np.zeros_like(a)])
        return rho, v @ self.rot.T


def draw_bar_parameters(seed: int, **params) -> dict:
    """Every ``BAR_PARAMETERS`` value drawn uniformly from ``seed``, then ``params`` applied."""
    rng = np.random.default_rng(seed)
    drawn = {k: int(rng.integers(lo, hi + 1)) if k in _INTEGERS else float(rng.uniform(lo, hi))
             for k, (lo, hi, _) in BAR_PARAMETERS.items()}
    unknown = set(params) - set(drawn)
    if unknown:
        raise TypeError(f"unknown barred_gas parameters {sorted(unknown)}; valid: {list(BAR_PARAMETERS)}")
    return {**drawn, **params}


def barred_gas(seed: int, particles: int = 400_000, **params) -> dict:
    """Gas cells of the out-of-family model (module docstring), galaxy frame, bar along +x.

    Returns numpy arrays ``position`` (N, 3) pc, ``velocity`` (N, 3) km/s (prograde:
    counter-clockwise seen from +z), ``density`` (N,) Msun/pc3, ``temperature`` K, ``x_h2``
    (per H nucleus), ``x_co`` (CO per H nucleus), ``temperature_dust`` K, and ``parameters``.
    """
    p = draw_bar_parameters(seed, **params)
    rng = np.random.default_rng([seed, 1])
    v_circ = lambda r: p["v0"] * r / np.sqrt(r * r + p["core_radius"] ** 2)  # noqa: E731
    inner, outer = p["x2_inner"], min(p["x2_inner"] + p["x2_width"], 220.0)
    x2 = _Orbits(p["x2_axis_ratio"], _tilt(p["tilt"], p["tilt_node"]) @ _rotation(p["x2_misalignment"]),
                 lambda a: (a / 100.0) ** -p["x2_slope"] * _logistic((a - inner) / 4) * _logistic((outer - a) / 4),
                 lambda a: p["scale_height"] * np.sqrt(a / 100.0), p["x2_mass"], v_circ, 260.0,
                 arms=p["x2_arms"], phase=p["x2_arm_phase"])
    x1_edge = p["x1_inner"]
    x1 = _Orbits(p["x1_axis_ratio"], np.eye(3),
                 lambda a: np.exp(-a / p["x1_scale"]) * _logistic((a - x1_edge) / 20) * _logistic((1000 - a) / 20),
                 lambda a: np.full_like(a, 1.5 * p["scale_height"]), p["x1_mass_fraction"] * p["x2_mass"], v_circ,
                 1100.0, inflow=p["x1_inflow"])

    # clumps: centres on the orbits (3 in 4 on x2), power-law masses dN/dM ~ M^-1.7 over 2 dex
    n_clumps = p["clump_count"]
    on_x2 = rng.uniform(size=n_clumps) < 0.75
    centres = np.where(on_x2[:, None], x2.sample(rng, n_clumps), x1.sample(rng, n_clumps))
    lo, hi, k = p["clump_mass_max"] / 100.0, p["clump_mass_max"], -0.7
    masses = (lo**k + rng.uniform(size=n_clumps) * (hi**k - lo**k)) ** (1 / k)
    radii = p["clump_radius"] * (masses / 1e5) ** 0.4

    # cells: like the mass of each structure, plus a diffuse cover of the window and the box
    n = {"x2": 0.4, "x1": 0.15, "clumps": 0.15, "window": 0.2, "box": 0.1}
    n = {key: int(frac * particles) for key, frac in n.items()}
    parts = [x2.sample(rng, n["x2"]), x1.sample(rng, n["x1"])]
    share = np.maximum(1, (n["clumps"] * masses / masses.sum()).astype(int))
    for centre, radius, count in zip(centres, radii, share):
        r = radius / np.sqrt(rng.uniform(0.01, 1.0, count) ** (-2.0 / 3.0) - 1.0)
        direction = rng.normal(size=(count, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        parts.append(centre + np.minimum(r, 5 * radius)[:, None] * direction)
    parts.append(rng.uniform([-300, -300, -90], [300, 300, 90], (n["window"], 3)))
    parts.append(rng.uniform([-1150, -1150, -200], [1150, 1150, 200], (n["box"], 3)))
    pos = np.concatenate(parts)

    rho2, v2 = x2.evaluate(pos)
    rho1, v1 = x1.evaluate(pos)
    radius = np.hypot(pos[:, 0], pos[:, 1])
    rho_d = p["diffuse_density"] * np.exp(-radius / 400.0 - np.abs(pos[:, 2]) / 50.0)
    v_d = v_circ(radius)[:, None] * np.column_stack([-pos[:, 1], pos[:, 0], 0 * radius]) / radius.clip(1e-3)[:, None]
    rho_c, mom_c = np.zeros(len(pos)), np.zeros((len(pos), 3))
    _, centre_v2 = x2.evaluate(centres)
    _, centre_v1 = x1.evaluate(centres)
    for centre, mass, radius_c, v in zip(centres, masses, radii, np.where(on_x2[:, None], centre_v2, centre_v1)):
        r2 = np.sum((pos - centre) ** 2, axis=1)
        near = r2 < (6 * radius_c) ** 2
        plummer = 3 * mass / (4 * math.pi * radius_c**3) * (1 + r2[near] / radius_c**2) ** -2.5
        rho_c[near] += plummer
        mom_c[near] += plummer[:, None] * v
    density = rho2 + rho1 + rho_d + rho_c
    velocity = (rho2[:, None] * v2 + rho1[:, None] * v1 + rho_d[:, None] * v_d + mom_c) / density[:, None]
    velocity += rng.normal(scale=p["dispersion"], size=velocity.shape)
    dense = density / (density + 30.0)
    return {"position": pos, "velocity": velocity, "density": density,
            "temperature": p["temperature_warm"] + (p["temperature_cold"] - p["temperature_warm"]) * dense,
            "x_h2": 0.5 * density / (density + p["h2_density"]),
            "x_co": 1e-4 * 0.5 * density / (density + p["h2_density"]) * density / (density + p["co_density"]),
            "temperature_dust": 20.0 + 10.0 * (1.0 - dense), "parameters": p}


def write_arepo(path, gas: dict, box_kpc: float = 2.4) -> None:
    """Write ``gas`` (from :func:`barred_gas`) as an AREPO/SGChem snapshot in code units of kpc,
    1e10 Msun and km/s, centred in a box of ``box_kpc``."""
    import h5py

    kpc_cm, msun_g, k_b, m_p = 3.0856775814913673e21, 1.988409870698051e33, 1.380649e-23, 1.67262192369e-27
    mu = 1.4 / (1.1 - gas["x_h2"])                               # x_He = 0.1, no H+
    energy = k_b * gas["temperature"] / ((2.0 / 3.0) * mu * m_p) / 1e6   # (km/s)^2
    with h5py.File(path, "w") as snap:
        head = snap.create_group("Header")
        for key, value in {"BoxSize": box_kpc, "UnitLength_in_cm": kpc_cm, "UnitMass_in_g": 1e10 * msun_g,
                           "UnitVelocity_in_cm_per_s": 1e5, "NumPart_ThisFile": [len(gas["density"]), 0, 0, 0, 0, 0],
                           "HubbleParam": 1.0, "Time": 0.0}.items():
            head.attrs[key] = value
        cells = snap.create_group("PartType0")
        cells["Coordinates"] = gas["position"] / 1000.0 + 0.5 * box_kpc
        cells["Velocities"] = gas["velocity"].astype(np.float32)
        cells["Density"] = (gas["density"] / 10.0).astype(np.float32)   # 1e10 Msun / kpc3 = 10 Msun / pc3
        cells["InternalEnergy"] = energy.astype(np.float32)
        chem = np.column_stack([gas["x_h2"], np.zeros_like(gas["x_h2"]), gas["x_co"]])
        cells["ChemicalAbundances"] = chem.astype(np.float32)
        cells["DustTemperature"] = gas["temperature_dust"].astype(np.float32)


def snapshot_field(seed: int, grid, folder, particles: int = 400_000):
    """Write one ``barred_gas`` snapshot into ``folder`` and read it as a field on ``grid``;
    returns ``(field, parameters)``.  The bar is placed at ``bar_angle`` from the Sun line
    with its near end at positive longitude (``observer_angle = bar_angle - 90``)."""
    gas = barred_gas(seed, particles)
    path = Path(folder) / f"barred_{seed}.hdf5"
    write_arepo(path, gas)
    field = from_arepo(path, grid, observer_angle=gas["parameters"]["bar_angle"] - 90.0)
    path.unlink()
    return field, gas["parameters"]


# ------------------------------------------------------------------------------- driver


def evaluate(model, n: int = 24, snapshots: int = 8, n_baseline: int = 32, excitation: str = "auto",
             noise: str = "survey", family: dict | None = None, particles: int = 400_000, log=print) -> dict:
    """Evaluate ``model`` in and out of family; returns the JSON-ready result (see the module text)."""
    start = time.perf_counter()
    grid = model.grid
    found, reason = training_excitation(getattr(model, "provenance", None))
    chosen = (found or "escape") if excitation == "auto" else excitation
    if found == "lte" and chosen == "lte":
        log(f"warning: the model was trained on LTE observations ({reason}); observing with excitation='lte'")
    observer = LineObserver(grid, excitation=chosen)
    cube_noise = make_noise(noise, grid, model)
    family = dict(family or {})
    loss = ScaledDensityLoss("Msun/pc3")
    baseline = constant_map(grid, n_baseline, family)
    log(f"constant baseline from {n_baseline} fields in {time.perf_counter() - start:.1f} s")
    sets = {}
    for label, count in (("in_family", n), ("out_of_family", snapshots)):
        pooled, rows = Pooled(), []
        with tempfile.TemporaryDirectory(prefix="iris_barred_") as folder:
            for i in range(count):
                t0 = time.perf_counter()
                if label == "in_family":
                    seed = IN_FAMILY_SEED + i
                    field, params = make_cmz(grid, seed=seed, **family), None
                else:
                    seed = SNAPSHOT_SEED + i
                    field, params = snapshot_field(seed, grid, folder, particles)
                made = time.perf_counter() - t0
                row = evaluate_field(field, model, observer, cube_noise, NOISE_SEED + seed, baseline, loss, pooled)
                row.update(seed=seed, seconds_field=made, seconds=row["seconds"] + made)
                if params is not None:
                    row["parameters"] = params
                rows.append(row)
                log(f"{label} {i + 1}/{count} seed {seed}: ratio {row['loss_ratio']:.3f} r {row['correlation']:.3f} "
                    f"mass {row['mass_error']:+.2f} ood {row['ood_warning']} ({row['seconds']:.1f} s)")
        sets[label] = {"aggregate": aggregate(rows, pooled), "fields": rows}
    return {"grid": grid.name, "excitation": chosen,
            "excitation_reason": reason if excitation == "auto" else "--excitation",
            "noise": "none" if cube_noise is None else {"kind": noise, **cube_noise.config.to_dict(),
                                                        "sigma_pixel_k": cube_noise.sigma_pixel},
            "make_cmz_parameters": family, "particles_per_snapshot": particles,
            "seeds": {"in_family": f"make_cmz seed {IN_FAMILY_SEED} + i",
                      "baseline": f"make_cmz seed {BASELINE_SEED} + i",
                      "out_of_family": f"barred_gas seed {SNAPSHOT_SEED} + i", "noise": f"{NOISE_SEED} + field seed",
                      "training": "sample_seed(2026, i): hashed 63-bit numbers, never these"},
            "baseline": {"n": n_baseline, "what": "pixel-wise mean truth of the baseline fields"},
            "ood_check": OOD_WARNING is not None and getattr(model, "input_statistics", None) is not None,
            "provenance": provenance_summary(model), "seconds": time.perf_counter() - start, **sets}


def table(result: dict) -> str:
    """The in-family vs out-of-family summary as text."""
    lines = [f"{'':<16}{'n':>4}{'loss':>8}{'const':>8}{'ratio':>8}{'median':>8}{'/empty':>8}{'r(asinh)':>10}"
             f"{'mass err':>10}{'median':>8}{'OOD':>7}{'s/field':>9}"]
    for label in ("in_family", "out_of_family"):
        a = result[label]["aggregate"]
        if a["n"] == 0:
            continue
        lines.append(f"{label:<16}{a['n']:>4}{a['loss']:>8.3f}{a['baseline_loss']:>8.3f}{a['loss_ratio']:>8.3f}"
                     f"{a['loss_ratio_median']:>8.3f}{a['loss_ratio_empty']:>8.3f}{a['correlation']:>10.3f}"
                     f"{a['mass_error_mean']:>+10.2f}{a['mass_error_median']:>+8.2f}"
                     f"{a['ood_warnings']:>4}/{a['n']:<2}{a['seconds_per_field']:>9.1f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cmz-small", help="model file or shipped name (default cmz-small)")
    parser.add_argument("--n", type=int, default=24, help="in-family make_cmz fields")
    parser.add_argument("--snapshots", type=int, default=8, help="out-of-family barred-potential snapshots")
    parser.add_argument("--baseline", type=int, default=32, help="fields averaged into the constant baseline map")
    parser.add_argument("--excitation", choices=("auto", "escape", "lte"), default="auto",
                        help="LineObserver excitation; auto = what the model's provenance says it was trained on")
    parser.add_argument("--noise", choices=("survey", "model", "none"), default="survey")
    parser.add_argument("--family", default="{}",
                        help="make_cmz parameters fixed for the in-family fields, as JSON (e.g. a model's own family)")
    parser.add_argument("--particles", type=int, default=400_000, help="gas cells per snapshot")
    parser.add_argument("--json", default=str(RESULTS / "evaluation_cmz_small.json"))
    args = parser.parse_args(argv)
    load = os.getloadavg()
    model = load_model(args.model)
    family = json.loads(args.family)
    result = evaluate(model, args.n, args.snapshots, args.baseline, args.excitation, args.noise, family, args.particles)
    words = sys.argv[1:] if argv is None else list(argv)
    result.update(model=args.model, command=" ".join(["benchmarks/evaluate_pretrained.py"] + words),
                  load_average_start=load, load_average_end=os.getloadavg(), cpu_count=os.cpu_count(),
                  torch_threads=torch.get_num_threads(), iris_nb_version=iris_nb.__version__)
    print(table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
