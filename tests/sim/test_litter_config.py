"""LitterConfig: validation, the old dict form, JSON/YAML round trips; ParameterTable of the gas models."""

import json

import numpy as np
import pytest

from iris_nb.sim import LitterConfig
from iris_nb.sim.cmz import CMZ_PARAMETERS
from iris_nb.sim.litter import LITTER_PARAMETERS
from iris_nb.sim.parameters import ParameterTable


def test_fields_are_normalised_and_read_like_the_old_dict(tmp_path):
    config = LitterConfig(["near.zarr", tmp_path / "far.zarr"], p=[0.3, 0.6])
    assert config.paths == ("near.zarr", str(tmp_path / "far.zarr")) and config.p == (0.3, 0.6)
    assert config.scale == 1.0 and config.ps == (0.3, 0.6)
    assert config.hit_fraction == pytest.approx(1 - 0.7 * 0.4)
    assert config["paths"] == config.paths and config["p"] == (0.3, 0.6) and config["scale"] == 1.0
    assert dict(config) == {"paths": config.paths, "p": (0.3, 0.6)}  # scale 1 is left out, as before
    assert {**config.replace(scale=2)}["scale"] == 2.0
    with pytest.raises(KeyError, match="fields"):
        config["prob"]
    one = LitterConfig("near.zarr")
    assert one.paths == ("near.zarr",) and one.p == 0.5 and one.ps == (0.5,)
    assert repr(one) == "LitterConfig(paths=('near.zarr',), p=0.5, scale=1.0)"


def test_round_trips_keep_the_file_format(tmp_path):
    config = LitterConfig(["a.zarr", "b.zarr"], p=[0.5, 0.1], scale=2)
    assert config.to_dict() == {"paths": ["a.zarr", "b.zarr"], "p": [0.5, 0.1], "scale": 2.0}
    assert LitterConfig(["a.zarr"], p=0.25).to_dict() == {"paths": ["a.zarr"], "p": 0.25}
    assert LitterConfig.from_yaml(config.to_yaml(tmp_path / "litter.yaml")) == config
    assert LitterConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["p"] == [0.5, 0.1]


def test_coerce():
    config = LitterConfig(["a.zarr"])
    assert LitterConfig.coerce(None) is None and LitterConfig.coerce(config) is config
    assert LitterConfig.coerce({"paths": ["a.zarr"], "p": 0.5}) == config
    with pytest.raises(ValueError, match=r"unknown litter keys \['prob'\]; known keys are \['p', 'paths', 'scale'\]"):
        LitterConfig.coerce({"paths": ["a.zarr"], "prob": 0.5})
    with pytest.raises(ValueError, match="needs 'paths'"):
        LitterConfig.coerce({"p": 0.5})
    with pytest.raises(TypeError, match="LitterConfig or a dict"):
        LitterConfig.coerce(["a.zarr"])


@pytest.mark.parametrize("kwargs, words", [
    ({"paths": []}, ["paths", "non-empty"]),
    ({"paths": ["a", ""]}, ["paths[1]", "non-empty path"]),
    ({"paths": ["a"], "p": 1.5}, ["LitterConfig.p", "[0, 1]", "1.5"]),
    ({"paths": ["a"], "p": True}, ["LitterConfig.p", "[0, 1]"]),
    ({"paths": ["a", "b"], "p": [0.5]}, ["2 paths but 1 probabilities"]),
    ({"paths": ["a", "b"], "p": [0.5, -0.1]}, ["p[1]", "store b", "-0.1"]),
    ({"paths": ["a"], "scale": -1}, ["scale", ">= 0", "-1"]),
    ({"paths": ["a"], "scale": float("nan")}, ["scale", ">= 0"]),
])
def test_impossible_settings_say_what_was_given(kwargs, words):
    with pytest.raises(ValueError) as error:
        LitterConfig(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_parameter_tables_parse_rows_kinds_and_continuations():
    table = ParameterTable.parse("""
        name  | low | high | kind | unit | description
        count | 1   | 3    | int  |      | how many
        size  | 0.5 | 2.0  | >0   | pc   | a long description
              |     |      |      |      | that goes on
        shift | -1.0| 1.0  | any  | deg  | either sign
    """)
    assert table == {"count": (1, 3, "how many", ""), "size": (0.5, 2.0, "a long description that goes on", "pc"),
                     "shift": (-1.0, 1.0, "either sign", "deg")}
    assert table.integers == {"count"} and table.kinds["shift"] == "any"
    assert table.check("count", 2.0, "toy") == 2 and table.check("shift", -3, "toy") == -3.0
    with pytest.raises(ValueError, match=r"toy parameter size=0 must be > 0 \(typical range \(0.5, 2.0\)\)"):
        table.check("size", 0, "toy")
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        table.check("count", 1.5, "toy")
    with pytest.raises(TypeError, match="finite real number"):
        table.check("size", float("inf"), "toy")
    drawn = table.draw(np.random.default_rng(0), {"size": 1}, "toy")
    again = table.draw(np.random.default_rng(0), {}, "toy")
    assert drawn["size"] == 1.0 and drawn["count"] == again["count"] and drawn["shift"] == again["shift"]
    with pytest.raises(TypeError, match=r"unknown parameters \['sise'\]"):
        table.draw(np.random.default_rng(0), {"sise": 1}, "toy")


def test_model_tables_keep_their_kinds():
    assert LITTER_PARAMETERS.integers == {"arm_count", "cloud_count"} and CMZ_PARAMETERS.integers == {"cloud_count"}
    assert LITTER_PARAMETERS.kinds["disc_height"] == ">0" and CMZ_PARAMETERS.kinds["lane_offset"] == "any"
    assert all(len(row) == 4 for table in (LITTER_PARAMETERS, CMZ_PARAMETERS) for row in table.values())
