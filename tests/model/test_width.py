"""The ``width`` option: channel scaling rule, IRIS exactness at width 1, small model files."""

import math

import pytest
import torch
from torch import nn

from iris_nb.grids import SMALL
from iris_nb.model import ModelFileError, PixelSelfAttention2d, Reverter, optimize_for_inference
from iris_nb.model.architecture import (
    ATTENTION_HEADS,
    DECODER_STAGES,
    ENCODER_STAGES,
    MIN_WIDTH,
    scaled_channels,
)
from iris_nb.model.fast_layers import PatchLinear, SubPixelConvTranspose2d

from .conftest import grid_of, randomise


@pytest.fixture(scope="module")
def quarter_model():
    torch.manual_seed(21)
    model = Reverter(SMALL, width=0.25, reduction="max", units={"density": "g/cm3"},
                     provenance={"run": "width-test"})
    return randomise(model, seed=8).eval()


def convolutions(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


# --------------------------------------------------------------------------- width 1 is IRIS
def test_width_one_is_exactly_the_iris_network(reference_512):
    model = Reverter(width=1.0)
    assert model.width == 1.0 and Reverter(SMALL).width == 1.0
    assert model.num_parameters() == 14_339_641
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    reference = {k: tuple(v.shape) for k, v in reference_512.state_dict().items()}
    assert ours == reference


def test_width_one_keeps_every_table_count_and_the_init():
    for table in (ENCODER_STAGES, DECODER_STAGES):
        for spec in table.values():
            assert scaled_channels(spec.in_channels, 1.0) == spec.in_channels
            assert scaled_channels(spec.out_channels, 1.0) == spec.out_channels
    torch.manual_seed(5)
    default = Reverter(SMALL)
    torch.manual_seed(5)
    explicit = Reverter(SMALL, width=1)
    for key, value in default.state_dict().items():
        assert torch.equal(explicit.state_dict()[key], value), key


# --------------------------------------------------------------------------- the channel rule
def test_quarter_width_small_model_has_quarter_channels(quarter_model):
    encoder, decoder = quarter_model.encoder, quarter_model.decoder
    assert encoder._3_1_convolution.in_channels == 1 and encoder._3_1_convolution.out_channels == 8
    attention = [encoder._4_4_attention, encoder._5_4_attention, encoder._6_4_attention]
    assert [a.channels for a in attention] == [16, 32, 64]
    assert [a.heads for a in attention] == [2, 4, 8]
    assert encoder._6_4_attention.attention.embed_dim == 64
    assert (encoder._9_1_convolution.in_channels, encoder._9_1_convolution.out_channels) == (256, 512)
    assert encoder._9_1_convolution.groups == 4
    assert decoder._1_1_transpose_convolution.in_channels == 512
    assert decoder._6_1_transpose_convolution.out_channels == 8
    assert decoder._7_1_transpose_convolution.out_channels == 1


@pytest.mark.parametrize("width", [MIN_WIDTH, 0.1, 0.3, 0.7, 1.25])
def test_any_width_keeps_heads_groups_and_single_input_output(width):
    model = Reverter(grid_of(64), width=width).eval()
    assert model.width == width
    for module in model.modules():
        if isinstance(module, PixelSelfAttention2d):
            assert module.channels >= module.heads and module.channels % module.heads == 0
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.groups > 1:
            assert module.groups == 4 and module.in_channels % 4 == 0 and module.out_channels % 4 == 0
    convs = convolutions(model)
    assert convs[0].in_channels == 1 and convs[-1].out_channels == 1
    for k, heads in ATTENTION_HEADS.items():  # nearest multiple of the heads to c * width
        channels = getattr(model.encoder, f"_{k}_4_attention").channels
        assert abs(channels - ENCODER_STAGES[k].out_channels * width) <= heads / 2
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 8, 64))
    assert out.shape == (2, 1, 64, 64) and (out >= 0).all()


def test_parameter_count_scales_with_width_squared():
    counts = {w: Reverter(SMALL, width=w).num_parameters() for w in (1.0, 0.5, 0.25, 0.125)}
    assert counts[1.0] == 14_321_985
    for width in (0.5, 0.25, 0.125):
        ratio = counts[width] / counts[1.0]
        assert 0.95 * width**2 < ratio < 1.1 * width**2, (width, ratio)
    assert counts[1.0] > counts[0.5] > counts[0.25] > counts[0.125]


def test_forward_shapes_at_quarter_width(quarter_model):
    cube = torch.rand(3, 1, 128, 32, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = quarter_model(cube)
        from_pv = quarter_model(cube.max(dim=3)[0], reduce=False)
    assert out.shape == from_pv.shape == (3, 1, 128, 128)
    assert torch.equal(out, from_pv)
    assert (out >= 0).all() and (out > 0).float().mean() > 0.05


# --------------------------------------------------------------------------- files
def test_quarter_width_model_file_is_a_few_megabytes_and_round_trips(tmp_path, quarter_model):
    path = tmp_path / "small_quarter.pt"
    quarter_model.save(path)
    size = path.stat().st_size
    assert 4 * quarter_model.num_parameters() < size < 5_000_000
    meta = torch.load(path, weights_only=True)["metadata"]
    assert meta["width"] == 0.25 and meta["parameters"] == quarter_model.num_parameters() < 1_000_000
    loaded = Reverter.load(path)
    assert loaded.width == 0.25 and loaded.grid == SMALL and loaded.reduction == "max"
    assert loaded.provenance == {"run": "width-test"}
    for key, value in quarter_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    cube = torch.rand(2, 1, 128, 32, 128)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(cube), quarter_model(cube))


def test_files_without_a_width_entry_are_width_one(tmp_path):
    path = tmp_path / "old.pt"
    Reverter(grid_of(64)).save(path)
    content = torch.load(path, weights_only=True)
    del content["metadata"]["width"]
    torch.save(content, path)
    assert Reverter.load(path).width == 1.0
    content["metadata"]["width"] = -1.0
    torch.save(content, path)
    with pytest.raises(ModelFileError, match="unusable metadata.*width"):
        Reverter.load(path)


def test_bare_state_dict_width_is_read_from_the_shapes(tmp_path, quarter_model):
    path = tmp_path / "bare.pt"
    torch.save(quarter_model.state_dict(), path)
    loaded = Reverter.load(path, grid=SMALL)
    assert loaded.width == 0.25
    for key, value in quarter_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    odd = Reverter(grid_of(64), width=0.3)  # rounding makes 0.3 hard to read back as a number
    torch.save(odd.state_dict(), path)
    inferred = Reverter.load(path, grid=grid_of(64))
    shapes = {k: v.shape for k, v in odd.state_dict().items()}
    assert {k: v.shape for k, v in inferred.state_dict().items()} == shapes
    assert Reverter.load(path, grid=grid_of(64), width=0.3).width == 0.3


def test_bare_state_dict_of_mixed_widths_asks_for_width(tmp_path, quarter_model):
    state = dict(quarter_model.state_dict())
    half = Reverter(SMALL, width=0.5).state_dict()
    for key in [k for k in state if k.startswith("encoder._3_")]:
        state[key] = half[key]
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"mixed.pt.*shape mismatches.*width="):
        Reverter.load(path, grid=SMALL)


# --------------------------------------------------------------------------- inference copy
def test_optimized_copy_at_quarter_width_gives_the_same_numbers(quarter_model):
    fast = optimize_for_inference(quarter_model)
    assert fast.width == 0.25
    assert isinstance(fast.encoder._9_1_convolution, PatchLinear)
    assert isinstance(fast.decoder._1_1_transpose_convolution, PatchLinear)
    assert isinstance(fast.decoder._7_1_transpose_convolution, SubPixelConvTranspose2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    cube = torch.rand(2, 1, 128, 32, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = quarter_model(cube)
        optimized = fast(cube)
    assert reference.abs().max() > 0
    assert (optimized - reference).abs().max() <= 1e-4 * reference.abs().max()


# --------------------------------------------------------------------------- bad widths
@pytest.mark.parametrize("width", [0, 0.0, -0.5, math.nan, math.inf])
def test_non_positive_widths_are_refused(width):
    with pytest.raises(ValueError, match="positive finite"):
        Reverter(SMALL, width=width)


def test_widths_too_small_for_the_heads_are_refused():
    with pytest.raises(ValueError, match=r"too small.*attention stage.*width >= 0.03125"):
        Reverter(SMALL, width=0.03)
    assert Reverter(grid_of(64), width=1 / 32).encoder._6_4_attention.channels == 8


@pytest.mark.parametrize("width", ["0.5", None, True, torch.tensor(0.5)])
def test_non_numeric_widths_are_refused(width):
    with pytest.raises(TypeError, match="width must be a real number"):
        Reverter(SMALL, width=width)


def test_load_checks_an_explicit_width_first(tmp_path):
    with pytest.raises(ValueError, match="positive finite"):
        Reverter.load(tmp_path / "does-not-matter.pt", width=0)
