"""Molecule: the LAMDA reader, on the shipped files, a hand-written file and broken copies of it."""

import hashlib

import astropy.constants as const
import numpy as np
import pytest

from iris_nb.sim.molecule import LamdaFormatError, Molecule

HC_K = (const.h * const.c / const.k_B).to_value("cm K")  # second radiation constant, 1.4388 cm K

# A 3-level molecule with two collision partners; every number is read back in the tests below.
TINY = """\
!MOLECULE
Tiny
!MOLECULAR WEIGHT
30.0
!NUMBER OF ENERGY LEVELS
3
!LEVEL + ENERGIES(cm^-1) + WEIGHT + J
    1     0.0   1.0     0
    2     2.0   3.0     1
    3     6.0   5.0     2
!NUMBER OF RADIATIVE TRANSITIONS
2
!TRANS + UP + LOW + EINSTEINA(s^-1) + FREQ(GHz) + E_u(K)
    1     2     1  1.0E-07   59.9584916   2.88
    2     3     2  9.0E-07  119.9169832   8.63
!NUMBER OF COLL PARTNERS
2
!COLLISIONS BETWEEN
1 Tiny-H2 made up for a test
!NUMBER OF COLL TRANS
3
!NUMBER OF COLL TEMPS
2
!COLL TEMPS
   10.0  100.0
!TRANS+ UP+ LOW+ COLLRATES(cm^3 s^-1)
    1    2   1    1.0E-11 2.0E-11
    2    3   1    3.0E-11 4.0E-11
    3    3   2    5.0E-11 6.0E-11
!COLLISIONS BETWEEN
6 Tiny-He
!NUMBER OF COLL TRANS
1
!NUMBER OF COLL TEMPS
3
!COLL TEMPS
   5.0  50.0  500.0
!TRANS+ UP+ LOW+ COLLRATES(cm^3 s^-1)
    1    2   1    7.0E-12 8.0E-12 9.0E-12
"""


def write(tmp_path, text, name="tiny.dat"):
    path = tmp_path / name
    path.write_text(text)
    return path


def line_number(text, fragment):
    """1-based number of the only line of ``text`` that contains ``fragment``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


# ---------------------------------------------------------------------- shipped files
def test_shipped_names():
    assert Molecule.shipped() == ["13CO", "CO", "HCN", "CS", "SiO", "HC3N"]


@pytest.mark.parametrize("name", Molecule.shipped())
def test_every_shipped_molecule_loads_with_consistent_shapes(name):
    m = Molecule.load(name)
    n_lev, n_lines = m.n_levels, len(m.upper)
    assert n_lev >= 20 and n_lines >= n_lev - 1
    assert m.level_energy.shape == m.weights.shape == (n_lev,)
    assert len(m.quantum_numbers) == n_lev
    assert m.upper.shape == m.lower.shape == m.einstein_a.shape == m.frequency.shape == (n_lines,)
    assert m.level_energy[0] == 0 and np.all(np.diff(m.level_energy) > 0)
    assert np.all(m.weights >= 1)
    assert np.all((0 <= m.lower) & (m.lower < m.upper) & (m.upper < n_lev))
    assert np.all(m.einstein_a > 0) and np.all(m.frequency > 0)
    # h nu = E_u - E_l for every line (the files agree with themselves to ~3e-5)
    t0 = const.h.value * m.frequency * 1e9 / const.k_B.value
    np.testing.assert_allclose(t0, m.level_energy[m.upper] - m.level_energy[m.lower], rtol=1e-4)
    assert m.partners and m.molecular_mass > 0
    for partner in m.partners.values():
        n_coll, n_temp = partner.rates.shape
        assert partner.temperatures.shape == (n_temp,) and np.all(np.diff(partner.temperatures) > 0)
        assert partner.upper.shape == partner.lower.shape == (n_coll,)
        assert np.all((0 <= partner.upper) & (partner.upper < n_lev) & (partner.lower < n_lev))
        assert np.all(partner.rates >= 0) and partner.rates.max() > 0


@pytest.mark.parametrize("name", Molecule.shipped())
def test_sha256_is_the_hash_of_the_package_file(name):
    m = Molecule.load(name)
    assert m.path.is_file() and m.path.parent.name == "lamda"
    assert m.sha256 == hashlib.sha256(m.path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name",
    Molecule.shipped(),
)
def test_level_labels_are_unique_and_transition_names_round_trip(name):
    m = Molecule.load(name)
    assert len(set(m.quantum_numbers)) == m.n_levels
    assert [m.transition(m.transition_name(i)) for i in range(len(m.upper))] == list(range(len(m.upper)))
    m.transition("1-0")


def test_13co_numbers_from_the_file():
    m = Molecule.load("13CO")
    assert m is Molecule.load("13co")  # names are case-insensitive, files parsed once
    assert m.name == "13C16O" and m.molecular_mass == 29.0
    assert m.n_levels == 41 and len(m.upper) == 40
    i = m.transition("2-1")
    assert i == 1
    assert m.einstein_a[i] == 6.038e-7
    assert m.frequency[i] == 220.3986841281
    assert m.weights[m.upper[i]] == 5 and m.weights[m.lower[i]] == 3
    assert m.upper_energy(i) == pytest.approx(11.0276302684 * HC_K, rel=1e-7)
    assert m.upper_energy(i) == pytest.approx(15.87, abs=0.01)
    assert m.level_energy[1] == pytest.approx(3.6759215030 * HC_K, rel=1e-7)  # J = 1, 5.29 K
    assert m.transition_name(i) == "2-1"
    assert m.transition(("2", "1")) == m.transition((2, 1)) == m.transition(" 2 - 1 ") == i
    assert m.transition("1-0") == 0
    for name in ("p-H2", "o-H2"):
        partner = m.partners[name]
        assert partner.temperatures.shape == (25,)
        assert (partner.temperatures[0], partner.temperatures[-1]) == (2.0, 3000.0)
        assert partner.rates.shape == (820,  25)  # 41 * 40 / 2 downward pairs
    assert "Yang" in m.partners["p-H2"].description
    assert m.partners["p-H2"].rates[0, 0] == 2.954e-11 and m.partners["o-H2"].rates[2, -1] == 8.638e-11
    assert "41 levels" in repr(m) and "p-H2" in repr(m)


# ---------------------------------------------------------------------- a file written here
def test_load_a_hand_written_file(tmp_path):
    path = write(tmp_path, TINY)
    m = Molecule.load(path)
    assert Molecule.load(str(path)).sha256 == m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.name == "Tiny" and m.molecular_mass == 30.0 and m.path == path.resolve()
    np.testing.assert_allclose(m.level_energy, np.array([0.0, 2.0, 6.0]) * HC_K, rtol=1e-7)
    np.testing.assert_array_equal(m.weights, [1, 3, 5])
    assert m.quantum_numbers == ("0", "1", "2")
    np.testing.assert_array_equal(m.upper, [1, 2])
    np.testing.assert_array_equal(m.lower, [0, 1])
    np.testing.assert_array_equal(m.einstein_a, [1e-7, 9e-7])
    np.testing.assert_array_equal(m.frequency, [59.9584916, 119.9169832])
    assert m.transition("2-1") == 1 and m.transition_name(0) == "1-0"
    assert list(m.partners) == ["H2", "He"]
    h2, he = m.partners["H2"], m.partners["He"]
    assert h2.name == "H2" and h2.description == "Tiny-H2 made up for a test"
    np.testing.assert_array_equal(h2.temperatures, [10.0, 100.0])
    np.testing.assert_array_equal(h2.upper, [1, 2, 2])
    np.testing.assert_array_equal(h2.lower, [0, 0, 1])
    np.testing.assert_array_equal(h2.rates, [[1e-11, 2e-11], [3e-11, 4e-11], [5e-11, 6e-11]])
    np.testing.assert_array_equal(he.temperatures, [5.0, 50.0, 500.0])
    np.testing.assert_array_equal(he.rates, [[7e-12, 8e-12, 9e-12]])


def test_levels_without_labels_are_numbered(tmp_path):
    text = TINY
    for weight, label in (("1.0", "0"), ("3.0", "1"), ("5.0", "2")):
        text = text.replace(f"   {weight}     {label}\n", f"   {weight}\n")
    m = Molecule.load(write(tmp_path, text))
    assert m.quantum_numbers == ("1", "2", "3")
    assert m.transition("3-2") == 1


def test_cached_molecule_arrays_are_read_only():
    m = Molecule.load("13CO")
    for array in (m.weights, m.einstein_a, m.frequency, m.upper, m.lower):
        assert not array.flags.writeable
    assert not m.level_energy.flags.writeable
    assert not m.partners["p-H2"].rates.flags.writeable


# ---------------------------------------------------------------------- broken files
BROKEN = [
    # (what, old text, new text, the line the error must name, a fragment of its message)
    ("non-number rate", "    2    3   1    3.0E-11 4.0E-11", "    2    3   1    3.0E-11 4.0F-11",
     "    2    3   1    3.0E-11 4.0F-11", "rate coefficient should be a number, got '4.0F-11'"),
    ("short rate row", "    3    3   2    5.0E-11 6.0E-11", "    3    3   2    5.0E-11",
     "    3    3   2    5.0E-11", "expected at least 5 columns, got 4"),
    ("upper level out of range", "    2     3     2  9.0E-07", "    2     9     2  9.0E-07",
     "    2     9     2  9.0E-07", "transition 9 -> 2 does not go down between levels 1..3"),
    ("transition going up", "    1     2     1  1.0E-07", "    1     1     2  1.0E-07",
     "    1     1     2  1.0E-07", "transition 1 -> 2 does not go down"),
    ("collision level out of range", "    2    3   1    3.0E-11", "    2    4   1    3.0E-11",
     "    2    4   1    3.0E-11", "collisional transition 4 -> 1 is not between two levels 1..3"),
    ("levels out of order", "    2     2.0   3.0     1", "    3     2.0   3.0     1",
     "    3     2.0   3.0     1", "expected level 2, got 3"),
    ("non-number energy", "    3     6.0   5.0     2", "    3     six   5.0     2",
     "    3     six   5.0     2", "the level energy should be a number, got 'six'"),
    ("negative A", "1.0E-07   59.9584916", "-1.0E-07   59.9584916",
     "-1.0E-07   59.9584916", "must be >= 0 and > 0"),
    ("descending temperatures", "   5.0  50.0  500.0", "   5.0  500.0  50.0",
     "   5.0  500.0  50.0", "collision temperatures must be positive and ascending"),
    ("unknown partner code", "6 Tiny-He", "9 Tiny-He", "9 Tiny-He", "unknown collision partner code 9"),
    ("negative rate", "8.0E-12 9.0E-12", "-8.0E-12 9.0E-12", "-8.0E-12 9.0E-12", "rate coefficients must be >= 0"),
    ("level count not a number", "!NUMBER OF ENERGY LEVELS\n3\n", "!NUMBER OF ENERGY LEVELS\nthree\n",
     "three", "the number of energy levels should be a number, got 'three'"),
]


@pytest.mark.parametrize("what, old, new, bad_line, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_file_names_path_and_line(tmp_path, what, old, new, bad_line, message):
    assert TINY.count(old) == 1
    text = TINY.replace(old, new)
    path = write(tmp_path, text)
    with pytest.raises(LamdaFormatError) as info:
        Molecule.load(path)
    assert isinstance(info.value, ValueError)
    text_of_error = str(info.value)
    assert f"{path.resolve()}, line {line_number(text, bad_line)}:" in text_of_error
    assert message in text_of_error


def test_missing_collision_row_at_end_of_file(tmp_path):
    text = TINY[: TINY.rindex("    1    2   1    7.0E-12")]  # the He partner's only rate row cut off
    path = write(tmp_path, text)
    with pytest.raises(LamdaFormatError, match=r"line end: the file ends where collisional transition 1 "):
        Molecule.load(path)
    with pytest.raises(LamdaFormatError) as info:
        Molecule.load(path)
    assert str(path.resolve()) in str(info.value)


def test_truncated_shipped_file(tmp_path):
    """13co.dat cut after the first 500 lines: the p-H2 table ends early, read as far as it goes."""
    lines = Molecule.load("13CO").path.read_text().splitlines(keepends=True)
    path = write(tmp_path, "".join(lines[:500]), "13co_cut.dat")
    with pytest.raises(LamdaFormatError, match="the file ends where collisional transition 399 "):
        Molecule.load(path)


def test_corrupted_row_in_shipped_file(tmp_path):
    """A letter inside an o-H2 rate of 13co.dat: the message gives that line's number in the file."""
    lines = Molecule.load("13CO").path.read_text().splitlines(keepends=True)
    assert lines[933].split()[:3] == ["3", "3", "2"]  # line 934: o-H2, J = 2 -> 1
    lines[933] = lines[933].replace("5.753E-11", "5.753E-1l")
    path = write(tmp_path, "".join(lines), "13co_bad.dat")
    with pytest.raises(LamdaFormatError, match=r", line 934: a rate coefficient should be a number, got '5.753E-1l'"):
        Molecule.load(path)


# ---------------------------------------------------------------------- look-up errors
def test_unknown_molecule_lists_the_shipped_names():
    with pytest.raises(ValueError, match="unknown molecule 'H2CO'") as info:
        Molecule.load("H2CO")
    for name in Molecule.shipped():
        assert repr(name) in str(info.value)
    with pytest.raises(TypeError, match="name or a LAMDA file path"):
        Molecule.load(13)


def test_missing_transition_names_the_molecule():
    m = Molecule.load("13CO")
    with pytest.raises(ValueError, match=r"13C16O \(13co.dat\) has no radiative transition '99-98'"):
        m.transition("99-98")
    with pytest.raises(ValueError, match="has no radiative transition"):
        m.transition("1-2")  # exists only the other way round
    with pytest.raises(ValueError, match="upper-lower"):
        m.transition("2_1")
    with pytest.raises(TypeError, match="an \\(upper, lower\\) pair"):
        m.transition(1)
