"""Property-based fuzzing of ``open_cube`` on random but plausible FITS files (hypothesis).

Property: a file (or a list of tiles) either opens as a cube ``(lon, lat, velocity)`` or ``open_cube`` raises a
``ValueError``/``TypeError`` with a message; never an ``IndexError``, ``KeyError``,
``AttributeError``, ``ZeroDivisionError`` or any other exception.  Examples are derandomised
so CI sees the same files every run.
"""

import warnings

import numpy as np
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitsmaker import write_fits_cube
from iris_nb import open_cube
from iris_nb.conventions import CUBE_DIMS

REST_HZ = 220.3986842e9
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SPECTRAL = {  # CTYPE: (CUNIT choices, CRVAL in that unit, |CDELT|)
    "VRAD": (["m/s", "km/s", ""], {"m/s": 1e4, "km/s": 10.0, "": 1e4}, {"m/s": 2e3, "km/s": 2.0, "": 2e3}),
    "VELO-LSR": (["m/s", "km/s"], {"m/s": 1e4, "km/s": 10.0}, {"m/s": 2e3, "km/s": 2.0}),
    "VELO": (["m/s", "km/s"], {"m/s": -5e3, "km/s": -5.0}, {"m/s": 2e3, "km/s": 2.0}),
    "FREQ": (["Hz", ""], {"Hz": REST_HZ, "": REST_HZ}, {"Hz": 1.5e6, "": 1.5e6}),
    "VOPT": (["m/s"], {"m/s": 1e4}, {"m/s": 2e3}),
    "WAVE": (["m", "Hz"], {"m": 1.36e-3, "Hz": REST_HZ}, {"m": 1e-8, "Hz": 1.5e6}),
    "LINEAR": ([""], {"": 1.0}, {"": 1.0}),
}
VALID_SPECTRAL = ["VRAD", "VELO-LSR", "VELO", "FREQ", "VOPT", "WAVE"]
BUNITS = ["K"] * 6 + ["mK", "Jy/beam", "JY/BEAM", "K (Tmb)", "Jy/sr", "km/s", "bananas", "", None]
SKIES = [  # (CTYPE1, CTYPE2, CRVAL1, CRVAL2, pixel size deg)
    ("GLON-CAR", "GLAT-CAR", 0.0, 0.0, 0.05),
    ("GLON-CAR", "GLAT-CAR", 359.9, 0.0, 0.05),
    ("GLON-TAN", "GLAT-TAN", 0.2, -0.1, 0.05),
    ("RA---TAN", "DEC--TAN", 266.4, -28.9, 0.05),
    ("RA---CAR", "DEC--CAR", 266.4, 0.0, 0.05),
]
BROKEN_SKIES = [("GLON-CAR", "DEC--CAR", 0.0, 0.0, 0.05), ("GLON-CAR", "GLAT-CAR", 0.0, 0.0, 0.0)]


@st.composite
def fits_files(draw):
    """``(header, data)`` of a 2-, 3- or 4-D FITS image with sky, spectral and Stokes axes."""
    naxis = draw(st.sampled_from([2] + [3] * 6 + [4] * 3))
    kinds = ["lon", "lat", "spectral", "stokes"][:naxis] if naxis > 2 else ["lon", "lat"]
    kinds = draw(st.permutations(kinds))
    sizes = [draw(st.integers(1, 4)) if kind != "stokes" else draw(st.sampled_from([1, 1, 2])) for kind in kinds]
    sky = draw(st.sampled_from(SKIES * 5 + BROKEN_SKIES))
    spectral = draw(st.sampled_from(VALID_SPECTRAL * 3 + ["VRAD"] * 6 + ["LINEAR"]))
    units, crvals, steps = SPECTRAL[spectral]
    cunit = draw(st.sampled_from(units))
    header = fits.Header()
    for number, (kind, size) in enumerate(zip(kinds, sizes), start=1):
        sign = draw(st.sampled_from([1.0, -1.0]))
        if kind in ("lon", "lat"):
            index = 0 if kind == "lon" else 1
            header[f"CTYPE{number}"] = sky[index]
            header[f"CRVAL{number}"] = sky[2 + index]
            header[f"CDELT{number}"] = sign * sky[4]
            header[f"CUNIT{number}"] = "deg"
            header[f"CRPIX{number}"] = (size + 1) / 2
        elif kind == "spectral":
            header[f"CTYPE{number}"] = spectral
            header[f"CRVAL{number}"] = crvals[cunit]
            header[f"CDELT{number}"] = sign * steps[cunit]
            if cunit:
                header[f"CUNIT{number}"] = cunit
            header[f"CRPIX{number}"] = 1.0
        else:
            header[f"CTYPE{number}"] = "STOKES"
            header[f"CRVAL{number}"], header[f"CDELT{number}"], header[f"CRPIX{number}"] = 1.0, 1.0, 1.0
    if sky[0].startswith("RA"):
        header["RADESYS"] = "ICRS"
    bunit = draw(st.sampled_from(BUNITS))
    if bunit is not None:
        header["BUNIT"] = bunit
    if draw(st.integers(0, 3)):
        header["RESTFRQ"] = REST_HZ
    if draw(st.booleans()):
        header["BMAJ"], header["BMIN"] = draw(st.sampled_from([(30.0 / 3600, 25.0 / 3600), (0.0, 0.0)]))
    if draw(st.booleans()):
        header["LINE"] = draw(st.sampled_from(["13CO(2-1)", "13CO21", "", "C18O 2-1"]))
    shape = tuple(reversed(sizes))  # numpy order: last FITS axis first
    data = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    pattern = draw(st.sampled_from(["none", "none", "plane", "all", "scatter"]))
    if pattern == "plane":
        axis = draw(st.integers(0, len(shape) - 1))
        data[(slice(None),) * axis + (0,)] = np.nan
    elif pattern == "all":
        data[...] = np.nan
    elif pattern == "scatter":
        data.ravel()[:: draw(st.integers(2, 5))] = np.nan
    return header, data


@FUZZ
@given(fits_files())
def test_open_cube_returns_a_cube_or_says_why(tmp_path, example):
    header, data = example
    path = tmp_path / "fuzz.fits"
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cube = open_cube(path)
    except (ValueError, TypeError) as err:
        assert str(err).strip(), f"{type(err).__name__} without a message for header {dict(header)}"
        return
    assert cube.dims == CUBE_DIMS
    assert cube.attrs["units"] == "K"
    for name in CUBE_DIMS:
        values = cube[name].values
        assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0), name
    assert np.all((cube.lon.values > -180) & (cube.lon.values <= 180))
    assert np.isfinite(cube.values).any()
    ctypes = [header[f"CTYPE{i}"] for i in range(1, data.ndim + 1)]
    one_plane = all(size == 1 for ctype, size in zip(ctypes, reversed(data.shape)) if ctype == "STOKES")
    if "GLON-CAR" in ctypes and header.get("BUNIT") == "K" and one_plane:
        # a Galactic CAR cube in K is only reordered, never resampled or rescaled
        read = np.sort(cube.values[np.isfinite(cube.values)])
        np.testing.assert_array_equal(read, np.sort(data[np.isfinite(data)]))


@st.composite
def tiles(draw):
    """Writers of a FITS tile: 1-5 pixels per axis on one of a few grids and phases, K/mK/Jy/beam."""
    n_lon, n_lat, n_v = (draw(st.integers(1, 5)) for _ in range(3))
    lon = draw(st.sampled_from([-0.3, -0.2, 0.0, 0.13])) + draw(st.sampled_from([0.1, 0.1, 0.05, 0.07])) * np.arange(n_lon)
    lat = draw(st.sampled_from([0.0, 0.05, 0.1])) + 0.1 * np.arange(n_lat)
    velocity = draw(st.sampled_from([-10.0, -9.0])) + draw(st.sampled_from([2.0, 2.0, 3.0])) * np.arange(n_v)
    data = np.arange(1, n_lon * n_lat * n_v + 1, dtype=np.float32).reshape(n_lon, n_lat, n_v)
    if draw(st.integers(0, 5)) == 0:
        data[...] = np.nan
    options = dict(
        spectral=draw(st.sampled_from(["VRAD", "FREQ", "VELO-LSR"])),
        velocity_descending=draw(st.booleans()),
        lon_descending=draw(st.booleans()),
        line=draw(st.sampled_from(["13CO(2-1)", "13CO21", "13CO 2-1", None])),
        bunit=draw(st.sampled_from(["K", "K", "mK", "Jy/beam"])),
        beam_fwhm=draw(st.sampled_from([30.0, (30.0, 20.0), None])),
    )
    return lambda path: write_fits_cube(path, data, lon, lat, velocity, **options)


@settings(FUZZ, max_examples=40)
@given(st.lists(tiles(), min_size=2, max_size=3))
def test_open_cube_mosaics_tiles_or_says_why(tmp_path, writers):
    paths = [write(tmp_path / f"tile{i}.fits") for i, write in enumerate(writers)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cube = open_cube(paths)
    except (ValueError, TypeError) as err:
        assert str(err).strip()
        return
    assert cube.dims == CUBE_DIMS and cube.attrs["units"] == "K"
    for name in CUBE_DIMS:
        assert np.all(np.diff(cube[name].values) > 0), name
    assert cube.attrs["source"] == ", ".join(p.name for p in paths)
