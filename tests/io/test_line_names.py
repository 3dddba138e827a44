"""One line, many spellings: FITS LINE keywords are compared the same way everywhere.

The mosaic check (tiles of one line) and the model-grid check (``standardize_cube(cube, grid)``,
the first step of ``revert``) both go through :func:`iris_nb.conventions.same_line`.
"""

import warnings

import numpy as np
import pytest

from fitsmaker import pixel_centres, unique_cube, write_fits_cube
from iris_nb.conventions import normalise_line, same_line
from iris_nb.cube import LineMismatchWarning, standardize_cube
from iris_nb.grids import SMALL
from iris_nb.io import open_cube

LON = pixel_centres(-1.0, 1.0, 8)
LAT = pixel_centres(-0.25, 0.25, 4)
VEL = pixel_centres(-100.0, 100.0, 6)
SPELLINGS = ["13CO(2-1)", "13CO21", "13CO 2-1", "13CO (2-1)", "13co(2-1)", "13CO_2-1", "13CO 2--1", " 13CO(2-1) "]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_spellings_of_13co21_are_one_line(tmp_path, spelling):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    path = write_fits_cube(tmp_path / "cube.fits", data, LON, LAT, VEL, line=spelling)
    west = write_fits_cube(tmp_path / "west.fits", data[:5], LON[:5], LAT, VEL, line="13CO(2-1)")
    east = write_fits_cube(tmp_path / "east.fits", data[3:], LON[3:], LAT, VEL, line=spelling)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no LineMismatchWarning, no iris_nb warning at all
        cube = open_cube(path)
        assert cube.attrs["line"] == spelling.strip()
        standardize_cube(cube, SMALL)
        mosaic = open_cube([west, east])  # the mosaic check accepts the pair ...
        standardize_cube(mosaic, SMALL)  # ... and so does the model-grid check
    np.testing.assert_array_equal(mosaic.values, data)
    assert same_line(spelling, SMALL.line) and normalise_line(spelling) == "13co21"


def test_molecule_and_transition_keywords_name_the_line(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    path = write_fits_cube(tmp_path / "mol.fits", data, LON, LAT, VEL, line=None,
                           extra_header={"MOLECULE": "13CO", "TRANSITI": "2-1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LineMismatchWarning)
        cube = open_cube(path)
        standardize_cube(cube, SMALL)
    assert cube.attrs["line"] == "13CO(2-1)"


def test_another_line_is_still_told_apart(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    cube = open_cube(write_fits_cube(tmp_path / "c18o.fits", data, LON, LAT, VEL, line="C18O 2-1"))
    with pytest.warns(LineMismatchWarning, match="C18O 2-1"):
        standardize_cube(cube, SMALL)
    west = write_fits_cube(tmp_path / "west.fits", data[:5], LON[:5], LAT, VEL, line="13CO21")
    east = write_fits_cube(tmp_path / "east.fits", data[3:], LON[3:], LAT, VEL, line="12CO(2-1)")
    with pytest.raises(ValueError, match="different lines"):
        open_cube([west, east])
