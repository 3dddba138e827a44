"""The cube conventions of iris_nb.conventions: longitude, line names, rest frequency, beam, order."""

import astropy.units as u
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_nb.conventions import (
    ascending,
    axis_order,
    beam_pair,
    cube_beam,
    cube_rest_frequency,
    normalise_line,
    rest_frequency_ghz,
    same_line,
    wrap_lon,
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_wrap_lon_lands_in_range_on_the_same_direction(lon):
    wrapped = float(wrap_lon(lon))
    assert -180.0 < wrapped <= 180.0
    assert np.isclose(np.cos(np.deg2rad(wrapped)), np.cos(np.deg2rad(lon)), atol=1e-9)
    assert np.isclose(np.sin(np.deg2rad(wrapped)), np.sin(np.deg2rad(lon)), atol=1e-9)


def test_wrap_lon_keeps_in_range_values_bit_for_bit():
    lon = np.array([-179.999, -0.1, 0.0, 0.1, 180.0])
    np.testing.assert_array_equal(wrap_lon(lon), lon)
    np.testing.assert_array_equal(wrap_lon([359.5, 360.0, -180.0, 540.0]), [-0.5, 0.0, 180.0, 180.0])


def test_line_names_are_compared_without_spelling():
    assert normalise_line("13CO (2-1)") == normalise_line("13co21") == "13co21"
    assert normalise_line(None) is None and normalise_line(" - ") is None
    assert same_line("13CO(2-1)", "13CO 2-1") and same_line(None, "C18O") and same_line("", "13CO")
    assert not same_line("13CO(2-1)", "C18O(2-1)")


def test_rest_frequency_is_checked():
    assert rest_frequency_ghz(None, "x") is None
    assert rest_frequency_ghz(220.3986842 * u.GHz, "x") == pytest.approx(220.3986842)
    with pytest.raises(ValueError, match="looks like Hz"):
        rest_frequency_ghz(220.4e9, "x")
    for bad in (0.0, -1.0, float("nan"), "fast", 3 * u.kg):
        with pytest.raises(ValueError, match="rest_frequency for x"):
            rest_frequency_ghz(bad, "x")
    assert cube_rest_frequency({"RESTFRQ": 230.538e9}) == pytest.approx(230.538)
    assert cube_rest_frequency({"rest_frequency": "1.3 mm"}) == pytest.approx(230.6, rel=1e-3)
    assert cube_rest_frequency({}) is None
    with pytest.raises(ValueError, match="looks like Hz"):
        cube_rest_frequency({"rest_frequency": 230.538e9})


def test_beam_from_arguments_and_attrs():
    assert beam_pair(30.0, "x") == (30.0, 30.0)
    assert beam_pair((20.0, 30.0), "x") == (30.0, 20.0)
    assert beam_pair(0.5 * u.arcmin, "x") == (30.0, 30.0)
    for bad in (0.0, (1.0, 2.0, 3.0), "wide", 3 * u.kg):
        with pytest.raises(ValueError, match="beam_fwhm for x"):
            beam_pair(bad, "x")
    assert cube_beam({"BMAJ": 30 / 3600, "BMIN": 20 / 3600}) == pytest.approx((30.0, 20.0))
    assert cube_beam({"beam_fwhm": 30.0, "beam_fwhm_minor": 20.0}) == (30.0, 20.0)
    with pytest.raises(ValueError, match="expected numbers"):
        cube_beam({"beam_fwhm": "wide"})


def test_axis_order():
    assert axis_order([1.0, 2.0], "lon") is None and axis_order([3.0], "lon") is None
    assert axis_order([2.0, 1.0], "lon") == slice(None, None, -1)
    np.testing.assert_array_equal(axis_order([2.0, 3.0, 1.0], "lon"), [2, 0, 1])
    with pytest.raises(ValueError, match="duplicate"):
        axis_order([1.0, 2.0, 1.0], "lon")
    values, flipped = ascending([3.0, 2.0, 1.0], "velocity", "x")
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    assert flipped
    with pytest.raises(ValueError, match="not monotonic"):
        ascending([1.0, 3.0, 2.0], "velocity", "x")
