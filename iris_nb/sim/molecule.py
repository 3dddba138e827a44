"""Molecular data in the LAMDA format: levels, radiative transitions and collision rates.

The Leiden Atomic and Molecular Database (LAMDA; Schoeier et al. 2005, A&A 432, 369) gives,
for each molecule, its energy levels (cm^-1) with statistical weights, the Einstein A
coefficients and frequencies of its radiative transitions, and downward collision rate
coefficients (cm^3 s^-1) per collision partner on a grid of kinetic temperatures.

::

    from iris_nb.sim import Molecule
    co13 = Molecule.load("13CO")            # a file shipped with the package
    co13.transition("2-1")                   # index of J = 2 -> 1 in co13.einstein_a etc.
    mine = Molecule.load("my_molecule.dat")  # any LAMDA-format file

The shipped files (``Molecule.shipped()``) are copied unchanged from LAMDA; each names the
sources of its data at its end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["Molecule", "CollisionPartner", "LamdaFormatError"]

_DATA = Path(__file__).with_name("lamda")
_SHIPPED = {"13CO": "13co.dat", "CO": "co.dat", "HCN": "hcn.dat", "CS": "cs.dat", "SiO": "sio.dat",
            "HC3N": "hc3n.dat"}

#: LAMDA collision-partner codes and the names used here.
PARTNER_NAMES = {1: "H2", 2: "p-H2", 3: "o-H2", 4: "e", 5: "H", 6: "He", 7: "H+"}

_CM_TO_K = 1.4387769  # h c / k in K cm (second radiation constant)


class LamdaFormatError(ValueError):
    """A LAMDA file that cannot be read; the message names the file and the line."""


@dataclasses.dataclass(frozen=True, eq=False)
class CollisionPartner:
    """Downward collision rate coefficients of one partner.

    Attributes
    ----------
    name:
        ``"H2"``, ``"p-H2"``, ``"o-H2"``, ``"e"``, ``"H"``, ``"He"`` or ``"H+"``.
    description:
        The file's line describing the rates and their source.
    temperatures:
        ``(T,)`` kinetic temperatures of the table, K, ascending.
    upper, lower:
        ``(n_coll,)`` level indices (0-based) of each collisional transition.
    rates:
        ``(n_coll, T)`` downward rate coefficients ``C_ul / n_partner``, cm^3 s^-1.
    """

    name: str
    description: str
    temperatures: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    rates: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Molecule:
    """Levels, radiative transitions and collision rates of one molecule (from a LAMDA file).

    Attributes
    ----------
    name:
        The molecule as the file names it (e.g. ``"13C16O"``).
    molecular_mass:
        Molecular weight, u.
    level_energy:
        ``(L,)`` level energies E / k, K (from cm^-1 through ``h c / k``).
    weights:
        ``(L,)`` statistical weights ``g``.
    quantum_numbers:
        ``(L,)`` the file's level labels (``J`` for linear rotors), strings.
    upper, lower:
        ``(R,)`` level indices (0-based) of each radiative transition.
    einstein_a:
        ``(R,)`` spontaneous emission coefficients ``A_ul``, s^-1.
    frequency:
        ``(R,)`` rest frequencies, GHz.
    partners:
        Collision partners by name (:class:`CollisionPartner`).
    path:
        The file read; ``sha256`` is the hash of its bytes (table caches are keyed by it).
    """

    name: str
    molecular_mass: float
    level_energy: np.ndarray
    weights: np.ndarray
    quantum_numbers: tuple
    upper: np.ndarray
    lower: np.ndarray
    einstein_a: np.ndarray
    frequency: np.ndarray
    partners: dict
    path: Path
    sha256: str

    # ------------------------------------------------------------------ construction
    @staticmethod
    def shipped() -> list[str]:
        """Names of the molecules whose LAMDA files ship with the package."""
        return list(_SHIPPED)

    @classmethod
    def load(cls, name_or_path) -> "Molecule":
        """A shipped molecule by name (``"13CO"``, case-insensitive; see :meth:`shipped`) or any
        LAMDA-format file by path.  Files are parsed once per process and cached."""
        if isinstance(name_or_path, Molecule):
            return name_or_path
        if not isinstance(name_or_path, (str, os.PathLike)):
            raise TypeError(f"Molecule.load takes a molecule name or a LAMDA file path, "
                            f"got {type(name_or_path).__name__}")
        text = os.fspath(name_or_path)
        by_name = {k.lower(): v for k, v in _SHIPPED.items()}
        if text.lower() in by_name:
            path = _DATA / by_name[text.lower()]
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ValueError(f"unknown molecule {text!r}: not one of the shipped molecules "
                                 f"{cls.shipped()} and no file of that name exists; pass a shipped "
                                 "name or the path of a LAMDA-format file")
        data = path.read_bytes()
        return _parse(str(path.resolve()), hashlib.sha256(data).hexdigest(), data)

    # ------------------------------------------------------------------ look-ups
    @property
    def n_levels(self) -> int:
        return len(self.level_energy)

    def transition(self, transition) -> int:
        """Index of a radiative transition given as ``"2-1"`` (upper-lower level labels, e.g. J
        for linear rotors) or as a ``(upper, lower)`` pair of level labels."""
        if isinstance(transition, str):
            parts = transition.replace(" ", "").split("-")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"a transition is written 'upper-lower' (e.g. '2-1'), got {transition!r}")
            up, low = parts
        elif isinstance(transition, (tuple, list)) and len(transition) == 2:
            up, low = (str(x) for x in transition)
        else:
            raise TypeError(f"a transition is a string such as '2-1' or an (upper, lower) pair, "
                            f"got {transition!r}")
        labels = self.quantum_numbers
        for i, (u, l) in enumerate(zip(self.upper, self.lower)):
            if labels[u] == up and labels[l] == low:
                return i
        known = ", ".join(self.transition_name(i) for i in range(min(len(self.upper), 6)))
        raise ValueError(f"{self.name} ({self.path.name}) has no radiative transition {transition!r}; "
                         f"its transitions are {known}, ...")

    def transition_name(self, index: int) -> str:
        """``"upper-lower"`` label of transition ``index``."""
        return f"{self.quantum_numbers[self.upper[index]]}-{self.quantum_numbers[self.lower[index]]}"

    def upper_energy(self, index: int) -> float:
        """E_u / k of transition ``index``, K."""
        return float(self.level_energy[self.upper[index]])

    def __repr__(self) -> str:
        partners = ", ".join(f"{k} ({len(p.temperatures)} T, {p.temperatures[0]:g}-{p.temperatures[-1]:g} K)"
                             for k, p in self.partners.items())
        return (f"Molecule({self.name!r}, {self.n_levels} levels, {len(self.upper)} lines, "
                f"partners: {partners}; {self.path.name})")


# ---------------------------------------------------------------------- parser
class _Lines:
    """The data lines of a LAMDA file (comment lines starting with '!' skipped), with numbers."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.items = [(i + 1, line) for i, line in enumerate(text.splitlines())
                      if line.strip() and not line.lstrip().startswith("!")]
        self.pos = 0

    def fail(self, what: str, lineno: int | None = None):
        if lineno is None:
            lineno = self.items[self.pos - 1][0] if 0 < self.pos <= len(self.items) else "end"
        raise LamdaFormatError(f"{self.path}, line {lineno}: {what}; is this a LAMDA-format file "
                               "(https://home.strw.leidenuniv.nl/~moldata/)?")

    def next(self, what: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.items):
            self.fail(f"the file ends where {what} was expected", "end")
        lineno, line = self.items[self.pos]
        self.pos += 1
        return lineno, line.split()

    def number(self, token: str, kind, what: str, lineno: int):
        try:
            return kind(token)
        except ValueError:
            self.fail(f"{what} should be a number, got {token!r}", lineno)

    def count(self, what: str) -> int:
        lineno, tokens = self.next(what)
        value = self.number(tokens[0], int, what, lineno)
        if value < 1:
            self.fail(f"{what} must be positive, got {value}", lineno)
        return value

    def row(self, n_min: int, what: str) -> tuple[int, list[str]]:
        lineno, tokens = self.next(what)
        if len(tokens) < n_min:
            self.fail(f"{what}: expected at least {n_min} columns, got {len(tokens)}", lineno)
        return lineno, tokens


def _level_label(tokens: list[str], index: int) -> str:
    """The quantum-number label of a level: the file's text after the weight, unquoted, with
    purely numeric labels normalised (``" 01 "`` -> ``"1"``); the level number if absent."""
    label = " ".join(tokens).strip().strip('"').strip()
    if not label:
        return str(index + 1)
    return str(int(label)) if label.isdigit() else label


@lru_cache(maxsize=32)
def _parse(path: str, sha256: str, data: bytes) -> Molecule:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    r = _Lines(path, text)
    _, tokens = r.next("the molecule name")
    name = tokens[0]
    lineno, tokens = r.next("the molecular weight")
    mass = r.number(tokens[0], float, "the molecular weight", lineno)

    n_levels = r.count("the number of energy levels")
    energy, weight, labels = np.zeros(n_levels), np.zeros(n_levels), []
    for i in range(n_levels):
        lineno, t = r.row(3, f"energy level {i + 1} (index, energy cm^-1, weight[, quantum numbers])")
        if r.number(t[0], int, "the level index", lineno) != i + 1:
            r.fail(f"expected level {i + 1}, got {t[0]}", lineno)
        energy[i] = r.number(t[1], float, "the level energy", lineno)
        weight[i] = r.number(t[2], float, "the statistical weight", lineno)
        labels.append(_level_label(t[3:], i))

    n_lines = r.count("the number of radiative transitions")
    upper, lower = np.zeros(n_lines, int), np.zeros(n_lines, int)
    a_coef, freq = np.zeros(n_lines), np.zeros(n_lines)
    for i in range(n_lines):
        lineno, t = r.row(5, f"radiative transition {i + 1} (index, upper, lower, A, frequency GHz)")
        up, low = (r.number(x, int, "a level index", lineno) for x in t[1:3])
        if not (1 <= up <= n_levels and 1 <= low <= n_levels and energy[up - 1] > energy[low - 1]):
            r.fail(f"transition {up} -> {low} does not go down between levels 1..{n_levels}", lineno)
        upper[i], lower[i] = up - 1, low - 1
        a_coef[i] = r.number(t[3], float, "the Einstein A coefficient", lineno)
        freq[i] = r.number(t[4], float, "the frequency", lineno)
        if a_coef[i] < 0 or freq[i] <= 0:
            r.fail(f"A = {t[3]} and frequency = {t[4]} must be >= 0 and > 0", lineno)

    partners = {}
    n_partners = r.count("the number of collision partners")
    for _ in range(n_partners):
        lineno, t = r.next("the collision partner line ('code description')")
        code = r.number(re.match(r"\d*", t[0]).group() or t[0], int, "the collision partner code", lineno)
        if code not in PARTNER_NAMES:
            r.fail(f"unknown collision partner code {code} (LAMDA codes are 1-7)", lineno)
        description = " ".join(t[1:]) if len(t) > 1 else PARTNER_NAMES[code]
        n_coll = r.count("the number of collisional transitions")
        n_temp = r.count("the number of collision temperatures")
        lineno, t = r.row(n_temp, "the collision temperatures")
        temps = np.array([r.number(x, float, "a collision temperature", lineno) for x in t[:n_temp]])
        if np.any(np.diff(temps) <= 0) or temps[0] <= 0:
            r.fail("collision temperatures must be positive and ascending", lineno)
        c_up, c_low, rates = np.zeros(n_coll, int), np.zeros(n_coll, int), np.zeros((n_coll, n_temp))
        for i in range(n_coll):
            lineno, t = r.row(3 + n_temp, f"collisional transition {i + 1} (index, upper, lower, "
                                          f"{n_temp} rates)")
            up, low = (r.number(x, int, "a level index", lineno) for x in t[1:3])
            if not (1 <= up <= n_levels and 1 <= low <= n_levels and up != low):
                r.fail(f"collisional transition {up} -> {low} is not between two levels 1..{n_levels}", lineno)
            c_up[i], c_low[i] = up - 1, low - 1
            rates[i] = [r.number(x, float, "a rate coefficient", lineno) for x in t[3:3 + n_temp]]
            if np.any(rates[i] < 0):
                r.fail("rate coefficients must be >= 0", lineno)
        partners[PARTNER_NAMES[code]] = CollisionPartner(
            name=PARTNER_NAMES[code], description=description, temperatures=temps,
            upper=c_up, lower=c_low, rates=rates)
    energy_k = energy * _CM_TO_K
    arrays = [energy_k, weight, upper, lower, a_coef, freq]
    for p in partners.values():
        arrays += [p.temperatures, p.upper, p.lower, p.rates]
    for array in arrays:  # the parsed molecule is cached and shared: nobody may change it
        array.setflags(write=False)
    return Molecule(name=name, molecular_mass=mass, level_energy=energy_k, weights=weight,
                    quantum_numbers=tuple(labels), upper=upper, lower=lower, einstein_a=a_coef,
                    frequency=freq, partners=partners, path=Path(path), sha256=sha256)
