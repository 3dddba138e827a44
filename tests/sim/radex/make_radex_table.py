"""Generate ``radex_13co.csv``: a reference table of RADEX results for 13CO.

This script is NOT run by the test suite. It regenerates the committed CSV that
tests compare our escape-probability solver against, so RADEX need not be installed.

How to run (outside the repository, in its own virtual environment)::

    python3 -m venv /work/scratch/radex/venv
    /work/scratch/radex/venv/bin/pip install "numpy<2" spectralradex
    /work/scratch/radex/venv/bin/python tests/sim/radex/make_radex_table.py \
        [--datafile PATH/13co.dat] [--out tests/sim/radex/radex_13co.csv]

The table was made with Python 3.11, spectralradex 1.1.5 (the manylinux wheel from
PyPI, which bundles a compiled f2py build of RADEX, Fortran version string
"30nov2011"), numpy 1.26.4 and pandas 3.0.6 (as pip resolved them).
numpy<2 is needed because spectralradex passes the parameter dict to Fortran as
its ``str()``, and numpy 2 scalars print as ``np.float64(...)``; all values are
cast to Python floats here anyway.

What RADEX computes (read from the spectralradex Fortran source, src/radex_src/
solver.f90, io.f90, background.f90, commondata.f90; van der Tak et al. 2007,
A&A 468, 627). nu is the line frequency, x_u, x_l the fractional level
populations, g_u, g_l the statistical weights, A_ul the Einstein A, N the 13CO
column and dv the FWHM (cm/s inside RADEX; km/s in the table):

* tau (line-centre optical depth of a Gaussian profile of FWHM dv):
      tau = A_ul c^3 / (8 pi nu^3) * N / (1.0645 dv) * (x_l g_u / g_l - x_u)
  (code: taul = (N/dv) (x_l g_u/g_l - x_u) / (fgaus nu~^3 / A), fgaus = 1.0645*8*pi,
  nu~ in cm^-1; 1.0645 = sqrt(pi / (4 ln 2)) so 1/(1.0645 dv) is the peak of a
  unit-area Gaussian in velocity).
* T_ex from the populations: h nu / k / ln(x_l g_u / (x_u g_l)).
* Escape probability beta(tau) (``method`` 1/2/3; spectralradex "geometry"):
    1 sphere (uniform sphere, Osterbrock App. 2), with t = tau/2:
        beta = (0.75/t) [1 - 1/(2 t^2) + (1/t + 1/(2 t^2)) e^(-2t)] for 0.1 <= t <= 50,
        series 1 - 0.75 t + t^2/2.5 - t^3/6 + t^4/17.5 for t < 0.1, and 0.75/t for t > 50.
    2 lvg (expanding sphere / Sobolev, de Jong, Boland & Dalgarno 1980, times 2), t = tau/2:
        beta = (1 - e^(-2.34 t)) / (2.34 t) for 0.01 <= t < 7; 1 for t < 0.01;
        beta = 1 / (2 t sqrt(ln(t / sqrt(pi)))) for t >= 7.
    3 slab (de Jong, Dalgarno & Chu 1975):
        beta = (1 - e^(-3 tau)) / (3 tau); 1 - 1.5 (tau + tau^2) for 3 tau < 0.1;
        1/(3 tau) for 3 tau > 50.
  The mean intensity in the rate equations is J = beta B_nu(T_bg) + (1 - beta) S_nu(T_ex);
  the local (1 - beta) S part is cancelled analytically (net downward rate
  A beta + stimulated terms from beta B_nu(T_bg)), RADEX "30nov2011" form.
* Background: tbg > 0 means a single blackbody B_nu(tbg) at every line (no
  dilution); it enters the rate equations through beta B_nu(tbg) and the output
  through the subtraction below.
* T_R (the column RADEX prints as "T_R (K)"; spectralradex's 'T_R (K)') is the
  Rayleigh-Jeans-equivalent line brightness above the background:
      T_R = c^2 / (2 k nu^2) * [B_nu(T_ex) - B_nu(T_bg)] * (1 - e^(-tau))
          = [J(T_ex) - J(T_bg)] (1 - e^(-tau)),  J(T) = (h nu/k) / (e^(h nu / k T) - 1)
  (RADEX drops the subtraction only when T_bg < 0.02 h nu / k, not the case here;
  e^(-tau) is taken as 0 for tau > 300). It does not depend on beta directly.
* Ortho/para H2: when only a total H2 density is given and the data file has
  separate o-H2/p-H2 rates, RADEX sets opr = min(3, 9 exp(-170.6 / T_kin)),
  n(p-H2) = n / (1 + opr), n(o-H2) = n opr / (1 + opr). Verified here by a
  re-run with the split given explicitly (``check_ortho_para``).
* Convergence: relative change of T_ex summed over lines with tau > 0.01 below
  1e-6 per thick line, at least 10 and at most 9999 iterations, with
  under-relaxation (new pops = 0.3 new + 0.7 old; T_ex averaged with the old one).
  Populations are floored at 1e-20. Rows whose run fails or prints the
  "did not converge" warning, or gives a non-finite value, are dropped and
  listed in the CSV header.

The script also checks, per row, that T_R and tau recomputed from the RADEX
T_ex / populations with the formulas above agree with RADEX's own values.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

# gfortran buffers its stdout when it is not a terminal; make it unbuffered (read when
# libgfortran loads, so before the import) so that RADEX warnings can be captured per run.
os.environ.setdefault("GFORTRAN_UNBUFFERED_PRECONNECTED", "y")

import numpy as np  # noqa: E402
from spectralradex import radex  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_DATA = HERE.parents[2] / "iris_nb" / "sim" / "lamda" / "13co.dat"
SHARED_DATA = Path("/work/shared/data/lamda/13co.dat")

TBG = 2.73
GEOMETRY = {"sphere": 1, "lvg": 2, "slab": 3}
TRANSITIONS = {("1", "0"): "1-0", ("2", "1"): "2-1"}
COLUMNS = ["geometry", "n_h2", "t_kin", "column", "fwhm", "transition", "t_ex", "tau", "t_r", "pop_upper", "pop_lower"]

# constants as in RADEX commondata.f90 (CODATA 2002), for the self-check only
H_CGS, K_CGS, C_CGS = 6.6260963e-27, 1.3806505e-16, 2.99792458e10


def grid():
    for n, t, col, fwhm in itertools.product(
        [1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 1e6, 1e8], [20.0, 50.0, 100.0, 200.0], [1e14, 1e15, 1e16, 1e17], [1.0, 10.0]
    ):
        yield "sphere", n, t, col, fwhm
    for geom in ("slab", "lvg"):
        for n, t, col in itertools.product([1e2, 1e3, 1e4, 1e5], [20.0, 100.0], [1e15, 1e17]):
            yield geom, n, t, col, 1.0


class FortranStdout:
    """Capture what the Fortran code writes to file descriptor 1."""

    def __enter__(self):
        sys.stdout.flush()
        self.tmp = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(1)
        os.dup2(self.tmp.fileno(), 1)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)
        self.tmp.seek(0)
        self.text = self.tmp.read().decode(errors="replace")
        self.tmp.close()


def params(datafile, geometry, n_h2, t_kin, column, fwhm, **partners):
    p = radex.get_default_parameters()
    p.update(
        {
            "molfile": str(datafile),
            "tkin": float(t_kin),
            "tbg": TBG,
            "cdmol": float(column),
            "h2": float(n_h2),  # total H2: RADEX applies the thermal o/p split itself
            "p-h2": 0.0,
            "o-h2": 0.0,
            "h": 0.0,
            "e-": 0.0,
            "h+": 0.0,
            "linewidth": float(fwhm),
            "fmin": 100.0,  # GHz: keeps 1-0 (110.2) and 2-1 (220.4) only
            "fmax": 250.0,
            "geometry": GEOMETRY[geometry],
        }
    )
    p.update({k: float(v) for k, v in partners.items()})
    return p


def run_one(p):
    with FortranStdout() as cap:
        out = radex.run(dict(p))
    return out, cap.text


def planck_j(t, nu):
    x = H_CGS * nu / (K_CGS * t)
    return (H_CGS * nu / K_CGS) / math.expm1(x)


def self_check(row, nu_ghz, a_ul, g_u, g_l, column, fwhm_kms):
    nu = nu_ghz * 1e9
    t_r = (planck_j(row["t_ex"], nu) - planck_j(TBG, nu)) * -math.expm1(-row["tau"])
    tau = (
        a_ul * C_CGS**3 / (8 * math.pi * nu**3) * column / (1.0645 * fwhm_kms * 1e5)
        * (row["pop_lower"] * g_u / g_l - row["pop_upper"])
    )
    return t_r, tau


def read_lines(datafile):
    """Level weights and A for the 1-0 and 2-1 lines from the LAMDA file (for the self-check)."""
    lines = [ln for ln in Path(datafile).read_text().splitlines()]
    nlev = int(lines[5])
    g = {int(ln.split()[0]): float(ln.split()[2]) for ln in lines[7 : 7 + nlev]}
    nrad = int(lines[8 + nlev])
    out = {}
    for ln in lines[10 + nlev : 10 + nlev + nrad]:
        _, up, lo, a, *_ = ln.split()
        out[(int(up), int(lo))] = (float(a), g[int(up)], g[int(lo)])
    return {"1-0": out[(2, 1)], "2-1": out[(3, 2)]}


def check_ortho_para(datafile):
    t = 50.0
    opr = min(3.0, 9.0 * math.exp(-170.6 / t))
    a, _ = run_one(params(datafile, "sphere", 1e3, t, 1e16, 1.0))
    b, _ = run_one(params(datafile, "sphere", 0.0, t, 1e16, 1.0, **{"p-h2": 1e3 / (1 + opr), "o-h2": 1e3 * opr / (1 + opr)}))
    np.testing.assert_allclose(a["T_ex"].to_numpy(), b["T_ex"].to_numpy(), rtol=1e-6)
    return opr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datafile", type=Path, default=REPO_DATA if REPO_DATA.exists() else SHARED_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "radex_13co.csv")
    args = ap.parse_args()

    datafile = args.datafile.resolve()
    sha = hashlib.sha256(datafile.read_bytes()).hexdigest()
    linedata = read_lines(datafile)
    opr50 = check_ortho_para(datafile)

    rows, dropped, worst = [], [], {"t_r": 0.0, "tau": 0.0}
    for geom, n, t, col, fwhm in grid():
        key = f"{geom},n_h2={n:g},t_kin={t:g},column={col:g},fwhm={fwhm:g}"
        out, text = run_one(params(datafile, geom, n, t, col, fwhm))
        if out is None or "converge" in text.lower():
            dropped.append(f"{key}: {'failed' if out is None else 'did not converge'}")
            continue
        got = {}
        for _, r in out.iterrows():
            name = TRANSITIONS.get((r["Qup"], r["Qlow"]))
            if name is None:
                continue
            row = {
                "geometry": geom, "n_h2": n, "t_kin": t, "column": col, "fwhm": fwhm, "transition": name,
                "t_ex": float(r["T_ex"]), "tau": float(r["tau"]), "t_r": float(r["T_R (K)"]),
                "pop_upper": float(r["POP UP"]), "pop_lower": float(r["POP LOW"]),
            }
            a_ul, g_u, g_l = linedata[name]
            t_r, tau = self_check(row, float(r["freq"]), a_ul, g_u, g_l, col, fwhm)
            worst["t_r"] = max(worst["t_r"], abs(t_r - row["t_r"]) / max(abs(row["t_r"]), 1e-3))
            worst["tau"] = max(worst["tau"], abs(tau - row["tau"]) / max(abs(row["tau"]), 1e-6))
            got[name] = row
        vals = [v for row in got.values() for v in row.values() if isinstance(v, float)]
        if set(got) != {"1-0", "2-1"} or not all(math.isfinite(v) for v in vals):
            dropped.append(f"{key}: missing line or non-finite value")
            continue
        rows += [got["1-0"], got["2-1"]]

    header = [
        "RADEX (van der Tak et al. 2007, A&A 468, 627) results for 13CO; made by make_radex_table.py (see its docstring)",
        f"RADEX Fortran version 30nov2011 via spectralradex {metadata.version('spectralradex')}, "
        f"numpy {np.__version__}, python {sys.version.split()[0]}",
        f"data file: {datafile.name} (LAMDA, 41 levels), sha256 {sha}",
        f"tbg = {TBG} K single blackbody B_nu(tbg), undiluted; collision partner: total H2 only ('h2' = n_h2)",
        "ortho/para H2: RADEX thermal split opr = min(3, 9 exp(-170.6/t_kin)), n_pH2 = n_h2/(1+opr), n_oH2 = n_h2 opr/(1+opr)"
        f" (checked: opr(50 K) = {opr50:.6f} given explicitly reproduces the 'h2' run)",
        "units: n_h2 cm^-3, t_kin K, column (13CO) cm^-2, fwhm km/s (Gaussian FWHM), t_ex K, tau dimensionless, t_r K,"
        " pop_* fractional level populations (sum over all 41 levels = 1)",
        "tau = line-centre optical depth of a Gaussian of FWHM fwhm: A c^3/(8 pi nu^3) N/(1.0645 fwhm) (x_l g_u/g_l - x_u)",
        "t_r = RADEX 'T_R (K)' = [J(t_ex) - J(tbg)] (1 - exp(-tau)), J(T) = (h nu/k)/(exp(h nu/kT) - 1)",
        "geometry: sphere = RADEX uniform sphere (method 1), lvg = expanding sphere (method 2), slab = plane-parallel slab"
        " (method 3); escape probabilities in the script docstring",
        f"self-check: max relative deviation of t_r / tau recomputed from t_ex, pops: {worst['t_r']:.1e} / {worst['tau']:.1e} (tau: largest where tau ~ 0)",
        f"{sum(r['tau'] < 0 for r in rows)} rows have tau < 0 and t_ex < 0 (weak population inversion, mostly 1-0 at"
        " n_h2 1e3-3e4 and t_kin >= 50 K): genuine RADEX output, kept; RADEX's convergence test only sums lines with"
        " tau > 0.01, so such lines are not themselves tested",
        "t_ex, tau, pops and t_r depend on column and fwhm only through column/fwhm (RADEX uses N/dv throughout)",
        "dropped rows (failed, not converged or non-finite): " + ("none" if not dropped else "; ".join(dropped)),
    ]
    with open(args.out, "w") as f:
        for h in header:
            f.write(f"# {h}\n")
        f.write(",".join(COLUMNS) + "\n")
        for row in rows:
            f.write(
                ",".join(
                    row[c] if isinstance(row[c], str) else (f"{row[c]:g}" if c in ("n_h2", "t_kin", "column", "fwhm") else f"{row[c]:.7g}")
                    for c in COLUMNS
                )
                + "\n"
            )
    print(f"wrote {len(rows)} rows to {args.out}; dropped {len(dropped)}: {dropped}")
    print(f"self-check max rel dev: {worst}")


if __name__ == "__main__":
    main()
