"""Level populations tabulated for fast per-cell look-up in the line observer.

Solving statistical equilibrium for every cell of every field would dominate the observer's
time, but the populations depend on only three numbers per cell (for a given molecule,
escape geometry, ortho/para rule and background): the H2 density, the kinetic temperature and
the molecule's column per line width.  :class:`ExcitationTable` solves
:func:`~iris_nb.sim.excitation.solve_excitation` once on a grid of those three (log-spaced)
and interpolates the log-populations trilinearly on the observer's device.

Tables are cached on disk, written atomically, under ``$IRIS_NB_CACHE/excitation`` (default
``~/.cache/iris_nb/excitation``), keyed by the SHA-256 of the molecular data file and every
setting that changes the numbers, so a table is built once per machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import torch

from .._files import atomic_torch_save
from .excitation import GEOMETRIES, solve_excitation
from .molecule import Molecule

__all__ = ["ExcitationTable", "cache_dir"]

_FORMAT = 1

#: log10 axes of the table: (first, last, points).  n_H2 in cm-3, T_kin in K, N/fwhm in
#: cm-2 per km/s.  Inputs outside are clamped to the edges (see ExcitationTable.lookup).
AXES = {
    "n_h2": (0.0, 8.0, 33),
    "t_kin": (math.log10(5.0), 3.0, 24),
    "column_per_fwhm": (8.0, 20.0, 49),
}

_MEMORY: dict = {}


def cache_dir() -> Path:
    """Folder of cached tables: ``$IRIS_NB_CACHE/excitation``, else ``~/.cache/iris_nb/excitation``."""
    root = os.environ.get("IRIS_NB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iris_nb"
    return Path(root) / "excitation"


class ExcitationTable:
    """Log10 level populations on a (log n_H2, log T_kin, log N/fwhm) grid (:data:`AXES`).

    Build or load with :meth:`get`; look up with :meth:`lookup`.  ``log_populations`` is a
    ``(L, n_h2, t_kin, column_per_fwhm)`` float32 tensor; ``converged`` says whether every
    grid point converged (a table with unconverged points is refused).
    """

    def __init__(self, molecule: Molecule, settings: dict, log_populations: torch.Tensor):
        self.molecule = molecule
        self.settings = settings
        self.log_populations = log_populations
        self._on_device: dict = {}

    # ------------------------------------------------------------------ construction
    @staticmethod
    def key(molecule: Molecule, geometry: str, ortho_para, t_bg: float) -> str:
        """Cache key: hash of the data file and the settings that change the table."""
        text = json.dumps({"format": _FORMAT, "data": molecule.sha256, "geometry": geometry,
                           "ortho_para": ortho_para, "t_bg": t_bg, "axes": AXES}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @classmethod
    def build(cls, molecule, geometry: str = "lvg", ortho_para=None, t_bg: float = 2.73,
              device=None) -> "ExcitationTable":
        """Solve the whole grid (about 40k statistical-equilibrium problems; seconds)."""
        molecule = Molecule.load(molecule)
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        axes = [torch.logspace(a, b, n, dtype=torch.float64) for a, b, n in AXES.values()]
        n_h2, t_kin, cpf = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # T clamping is expected at the table edges
            result = solve_excitation(molecule, n_h2, t_kin, cpf, 1.0, geometry=geometry,
                                      ortho_para=ortho_para, t_bg=t_bg, device=device)
        if not bool(result.converged.all()):
            raise RuntimeError(f"the excitation table of {molecule.name} did not converge at "
                               f"{int((~result.converged).sum())} grid points; please report this")
        log_pop = torch.log10(result.populations.clamp_min(1e-300)).clamp_min(-300.0)
        settings = {"geometry": geometry, "ortho_para": ortho_para, "t_bg": t_bg}
        return cls(molecule, settings, log_pop.permute(3, 0, 1, 2).float().cpu().contiguous())

    @classmethod
    def get(cls, molecule, geometry: str = "lvg", ortho_para=None, t_bg: float = 2.73,
            cache: bool = True) -> "ExcitationTable":
        """The table for these settings: from this process's memory, the disk cache, or built
        (then written to the cache atomically)."""
        molecule = Molecule.load(molecule)
        key = cls.key(molecule, geometry, ortho_para, t_bg)
        if key in _MEMORY:
            return _MEMORY[key]
        path = cache_dir() / f"{Path(molecule.path).stem}-{key}.pt"
        table = None
        if cache and path.is_file():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                if payload.get("key") == key:
                    table = cls(molecule, json.loads(payload["settings"]), payload["log_populations"])
            except Exception:  # a damaged cache file is rebuilt, never trusted
                table = None
        if table is None:
            table = cls.build(molecule, geometry, ortho_para, t_bg)
            if cache:
                try:
                    atomic_torch_save({"key": key, "settings": json.dumps(table.settings),
                                       "log_populations": table.log_populations}, path)
                except OSError as err:
                    warnings.warn(f"could not cache the excitation table in {path.parent} ({err}); "
                                  "set IRIS_NB_CACHE to a writable folder", stacklevel=2)
        _MEMORY[key] = table
        return table

    # ------------------------------------------------------------------ look-up
    def _table_on(self, device, levels: tuple) -> torch.Tensor:
        k = (str(device), levels)
        if k not in self._on_device:
            self._on_device[k] = self.log_populations[list(levels)].unsqueeze(0).to(device)
        return self._on_device[k]

    def lookup(self, levels, n_h2, t_kin, column_per_fwhm) -> torch.Tensor:
        """Populations of ``levels`` (level indices, 0-based) at each cell.

        ``n_h2`` (cm-3), ``t_kin`` (K) and ``column_per_fwhm`` (cm-2 per km/s) are tensors of one
        shape ``S`` on one device; values outside :data:`AXES` are clamped to the table's edges
        (zero densities take the lowest density).  Returns ``(len(levels), *S)`` fractional
        populations in the dtype of ``t_kin``, trilinear in the log-populations over the log axes
        (differentiable in the inputs inside the table; zero gradient where they are clamped).
        """
        levels = tuple(int(i) for i in levels)
        table = self._table_on(t_kin.device, levels)
        coords = []
        for value, (lo, hi, _) in zip((column_per_fwhm, t_kin, n_h2), reversed(list(AXES.values()))):
            x = torch.log10(value.float().clamp_min(1e-30))  # differentiable: grid_sample passes gradients
            coords.append(((x - lo) / (hi - lo) * 2.0 - 1.0).clamp(-1.0, 1.0))
        grid = torch.stack(coords, dim=-1).reshape(1, 1, 1, -1, 3)  # (x=W: cpf, y=H: t, z=D: n)
        out = torch.nn.functional.grid_sample(table, grid, mode="bilinear", align_corners=True)
        return torch.pow(10.0, out.reshape(len(levels), *t_kin.shape)).to(t_kin.dtype)
