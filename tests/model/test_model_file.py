"""Model files: IRIS state dicts, own format with metadata, atomic writes, clear errors."""

import datetime as dt
import os

import astropy.units as u
import pytest
import torch

import iris_nb
from iris_nb.grids import SEDIGISM, SMALL
from iris_nb.model import ModelFileError, ModelFileNotFoundError, Reverter

from .conftest import randomise


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(11)
    model = Reverter(SMALL, reduction="max", input_space="intensity", units={"density": "g/cm3", "intensity": "Jy/sr"},
                     provenance={"run": "unit-test", "seed": 11})
    return randomise(model, seed=4).eval()


# --------------------------------------------------------------------------- IRIS compatibility
def test_bare_iris_state_dict_loads_and_gives_the_reference_outputs(tmp_path, reference_512):
    path = tmp_path / "chp_32.pt"
    torch.save(reference_512.state_dict(), path)
    model = Reverter.load(path).eval()
    assert model.grid == SEDIGISM and model.reduction == "mean" and model.input_space == "temperature"
    assert set(model.state_dict()) == set(reference_512.state_dict())
    assert model.units["temperature"] == u.mK and model.units["density"] == u.g / u.cm**3
    assert model.num_parameters() == sum(p.numel() for p in reference_512.parameters() if p.requires_grad)
    cube = torch.rand(1, 1, 512, 128, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_512(cube)
        got = model(cube)
    assert expected.shape == got.shape == (1, 1, 512, 512)
    assert (expected > 0).float().mean() > 0.2  # a non-degenerate output
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_data_parallel_prefixes_are_stripped(tmp_path, small_model):
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in small_model.state_dict().items()}, path)
    model = Reverter.load(path, grid="SMALL")
    for key, value in small_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_old_input_space_codes_are_accepted(tmp_path):
    """Models and files written before the rename said "T", "I" and "vrho"."""
    for old, new in (("T", "temperature"), ("I", "intensity"), ("vrho", "v_density")):
        assert Reverter(SMALL, input_space=old, width=0.125).input_space == new
    path = tmp_path / "old.pt"
    Reverter(SMALL, input_space="v_density", width=0.125).save(path)
    content = torch.load(path, weights_only=True)
    assert content["metadata"]["input_space"] == "v_density"
    content["metadata"]["input_space"] = "vrho"  # as files were written before the rename
    torch.save(content, path)
    assert Reverter.load(path).input_space == "v_density"
    with pytest.raises(ValueError, match="input_space must be one of .'temperature', 'intensity', 'v_density'."):
        Reverter(SMALL, input_space="flux")


# --------------------------------------------------------------------------- own format
def test_save_load_round_trip_keeps_weights_and_metadata(tmp_path, small_model):
    path = tmp_path / "model.pt"
    small_model.save(path, provenance={"epochs": 3})
    assert small_model.provenance == {"run": "unit-test", "seed": 11, "epochs": 3}
    loaded = Reverter.load(path, map_location=torch.device("cpu"))
    assert loaded.grid == SMALL and loaded.grid.name == "SMALL"
    assert loaded.reduction == "max" and loaded.input_space == "intensity"
    assert loaded.units == small_model.units and loaded.units["density"] == u.g / u.cm**3
    assert loaded.provenance == {"run": "unit-test", "seed": 11, "epochs": 3}
    for key, value in small_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    cube = torch.rand(2, 1, 128, 32, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(cube), small_model(cube), rtol=0, atol=0)

    raw = torch.load(path, weights_only=True)  # a plain, code-free file
    assert raw["format"] == "iris_nb.reverter" and raw["format_version"] == 1
    meta = raw["metadata"]
    assert meta["grid"] == SMALL.to_dict()
    assert meta["units"]["density"] == "g / cm3"
    assert meta["parameters"] == small_model.num_parameters()
    assert meta["iris_nb_version"] == iris_nb.__version__
    created = dt.datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - created).total_seconds() < 600


def test_load_with_a_callable_map_location(tmp_path, small_model):
    path = tmp_path / "model.pt"
    small_model.save(path)
    loaded = Reverter.load(str(path), map_location=lambda storage, location: storage)
    assert torch.equal(loaded.encoder[0].weight, small_model.encoder[0].weight)


def test_provenance_must_be_json(tmp_path, small_model):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        small_model.save(tmp_path / "model.pt", provenance={"path": tmp_path})
    assert not (tmp_path / "model.pt").exists()


# --------------------------------------------------------------------------- errors
def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(ModelFileNotFoundError, match="nowhere.pt") as info:
        Reverter.load(path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelFileError, match="notes.pt.*not a \\(complete\\) torch file"):
        Reverter.load(path)


def test_truncated_file_is_refused(tmp_path, small_model):
    path = tmp_path / "cut.pt"
    small_model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt"):
        Reverter.load(path)


class _Trap:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_files_with_code_are_not_executed(tmp_path):
    trap = _Trap()
    trap.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"encoder._1_1_convolution.weight": trap}, path)
    with pytest.raises(ModelFileError, match="evil.pt"):
        Reverter.load(path)
    assert not (tmp_path / "pwned").exists()


def test_state_dict_of_another_architecture_lists_the_problem(tmp_path, small_model):
    path = tmp_path / "small_bare.pt"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(ModelFileError, match=r"small_bare.pt.*missing keys: encoder\._1_1_convolution\.weight"):
        Reverter.load(path)  # a bare file is taken to be SEDIGISM unless grid= says otherwise
    assert Reverter.load(path, grid=SMALL).grid == SMALL

    state = dict(small_model.state_dict())
    state["decoder._2_1_transpose_convolution.bias"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"shape mismatches: decoder\._2_1_transpose_convolution\.bias"):
        Reverter.load(path, grid=SMALL)
    state.pop("decoder._2_1_transpose_convolution.bias")
    state["decoder.extra"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="1 missing keys.*1 unexpected keys: decoder.extra"):
        Reverter.load(path, grid=SMALL)


def test_non_state_dict_content_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelFileError, match="list.pt holds a list"):
        Reverter.load(path)
    torch.save({"format": "somebody.else", "state_dict": {}}, path)
    with pytest.raises(ModelFileError, match="format 'somebody.else'"):
        Reverter.load(path)


# --------------------------------------------------------------------------- atomic writes
def test_failing_save_keeps_the_existing_file(tmp_path, small_model, monkeypatch):
    path = tmp_path / "model.pt"
    small_model.save(path)
    before = path.read_bytes()

    def disk_full(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        small_model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left behind
    assert Reverter.load(path).reduction == "max"


def test_save_into_a_missing_folder_is_explained(tmp_path, small_model):
    with pytest.raises(ModelFileNotFoundError, match="does not exist"):
        small_model.save(tmp_path / "no" / "such" / "model.pt")
