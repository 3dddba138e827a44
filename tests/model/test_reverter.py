"""The Reverter network: architecture, attention kernel, reduction, units, fast inference copy."""

import math

import astropy.units as u
import numpy as np
import pytest
import torch
from torch import nn

from iris_nb.grids import SEDIGISM, SMALL, Axis
from iris_nb.model import (
    PixelSelfAttention2d,
    Reverter,
    fold_batch_norm,
    optimize_for_inference,
    set_fast_attention,
)

from iris_nb.model.fast_layers import PatchLinear, SubPixelConvTranspose2d, depth_to_space, space_to_depth

from .conftest import grid_of, randomise


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return randomise(Reverter(SMALL), seed=3).eval()


# --------------------------------------------------------------------------- architecture
def test_512_model_has_the_iris_parameter_count_and_names():
    model = Reverter()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 14_339_641
    assert model.num_parameters() == 14_339_641
    keys = set(model.state_dict())
    for key in [
        "encoder._1_1_convolution.weight", "encoder._1_2_batch_norm.running_mean",
        "encoder._4_4_attention.pre_norm.weight", "encoder._4_4_attention.attention.in_proj_weight",
        "encoder._4_4_attention.attention.out_proj.weight", "encoder._4_4_attention.post_norm.bias",
        "encoder._6_4_attention.attention.in_proj_bias", "encoder._9_1_convolution.bias",
        "decoder._1_1_transpose_convolution.weight", "decoder._8_2_batch_norm.running_var",
        "decoder._9_1_transpose_convolution.weight",
        "temperature", "intensity", "v_density", "density",
    ]:
        assert key in keys, key
    assert not any(k.startswith("encoder._9_2_batch") or k.startswith("decoder._9_2_batch") for k in keys)
    assert isinstance(model.encoder._9_2_leaky_relu, nn.LeakyReLU)
    assert isinstance(model.decoder._9_2_relu, nn.ReLU)
    assert model.encoder._4_4_attention.attention.num_heads == 2
    assert model.encoder._6_4_attention.attention.num_heads == 8
    assert model.decoder._1_1_transpose_convolution.groups == 4
    names = {name for name, _ in model.named_parameters()}
    for space in ("temperature", "intensity", "v_density", "density"):
        scalar = getattr(model, space)
        assert scalar.dim() == 0 and scalar.dtype == torch.float32 and not scalar.requires_grad
        assert space not in names


def test_convolution_init_is_kaiming_uniform_with_leaky_relu_gain():
    model = Reverter(grid_of(64))
    weight = model.encoder._7_1_convolution.weight  # (512, 256, 4, 4), fan_in 4096
    bound = math.sqrt(2.0 / (1 + 0.01**2)) * math.sqrt(3.0 / (256 * 16))
    assert weight.abs().max().item() <= bound * (1 + 1e-6)
    assert weight.abs().max().item() > 0.99 * bound  # torch's default init would stay below bound / 2.4
    last = model.decoder._6_1_transpose_convolution.weight  # (64, 1, 4, 4): fan_in 16
    assert last.abs().max().item() <= math.sqrt(2.0) * math.sqrt(3.0 / 16) * (1 + 1e-6)


@pytest.mark.parametrize("size, first, last", [(64, 4, 6), (128, 3, 7), (256, 2, 8)])
def test_smaller_grids_drop_outer_stages_and_keep_stage_numbers(size, first, last):
    model = Reverter(grid_of(size))
    encoder_names = list(model.encoder._modules)
    assert encoder_names[0] == f"_{first}_1_convolution"
    assert model.encoder[0].in_channels == 1
    assert encoder_names[-1] == "_9_2_leaky_relu"
    assert "_4_4_attention" in encoder_names and "_6_4_attention" in encoder_names
    decoder_names = list(model.decoder._modules)
    assert decoder_names[-2:] == [f"_{last}_1_transpose_convolution", f"_{last}_2_relu"]
    assert model.decoder[-2].out_channels == 1
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 1, size, 8, size))
    assert out.shape == (2, 1, size, size)
    assert (out >= 0).all()


@pytest.mark.parametrize(
    "grid, message",
    [
        (SEDIGISM.replace(lon=Axis(-1.5, 1.5, 256)), "as many lon, velocity and distance pixels"),
        (grid_of(64).replace(lon=Axis(-1.5, 1.5, 96), velocity=Axis(-200, 200, 96),
                             distance=Axis(8052, 8502, 96)), "power of two"),
        (grid_of(64).replace(lon=Axis(-1.5, 1.5, 32), velocity=Axis(-200, 200, 32),
                             distance=Axis(8052, 8502, 32)), "N=32"),
    ],
)
def test_unsupported_grids_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        Reverter(grid)


def test_constructor_validates_its_options():
    with pytest.raises(ValueError, match="reduction"):
        Reverter(SMALL, reduction="median")
    with pytest.raises(ValueError, match="input_space"):
        Reverter(SMALL, input_space="flux")
    with pytest.raises(ValueError, match="unknown unit spaces"):
        Reverter(SMALL, units={"brightness": "K"})
    with pytest.raises(ValueError, match="not a unit of density"):
        Reverter(SMALL, units={"density": "K"})
    with pytest.raises(TypeError, match="JSON"):
        Reverter(SMALL, provenance={"data": object()})


def test_units_come_from_the_scalar_buffers():
    model = Reverter(SMALL, units={"density": "g/cm3", "temperature": "mK"})
    assert model.density.item() == pytest.approx(1e-3)
    assert model.temperature.item() == pytest.approx(1e3)
    assert model.units["density"] == u.g / u.cm**3
    assert model.units["temperature"] == u.mK
    assert model.units["intensity"] == u.MJy / u.sr  # default
    with torch.no_grad():
        model.density.fill_(1.0)
    assert model.units["density"] == u.kg / u.m**3


# --------------------------------------------------------------------------- attention
@pytest.mark.parametrize("training", [True, False])
def test_fast_attention_matches_multihead_attention_module(training):
    torch.manual_seed(5)
    layer = randomise(PixelSelfAttention2d(64, 2), seed=9).train(training)
    x = torch.randn(3, 64, 8, 6, requires_grad=True)

    layer.fast_attention = False
    slow = layer(x)
    slow.square().sum().backward()
    slow_grads = [p.grad.clone() for p in layer.parameters()]
    slow_x_grad = x.grad.clone()
    layer.zero_grad()
    x.grad = None

    layer.fast_attention = True
    fast = layer(x)
    fast.square().sum().backward()
    assert fast.shape == (3, 64, 8, 6)
    assert (fast - slow).abs().max().item() < 1e-5
    assert (x.grad - slow_x_grad).abs().max().item() < 1e-4
    for p, g in zip(layer.parameters(), slow_grads):
        assert p.grad is not None and p.grad.abs().sum() > 0
        assert (p.grad - g).abs().max().item() <= 1e-4 * max(1.0, g.abs().max().item())


def test_attention_mixes_pixels():
    layer = PixelSelfAttention2d(64, 2).eval()
    x = torch.randn(1, 64, 4, 4)
    y = x.clone()
    y[..., 0, 0] += 3.0 * torch.randn(64)  # not a constant shift, which pre_norm would remove
    with torch.no_grad():
        change = (layer(y) - layer(x))[..., 3, 3].abs().max()
    assert change > 1e-4  # a far pixel sees the change: attention is global


def test_whole_model_fast_and_plain_attention_agree(small_model):
    cube = torch.rand(2, 1, 128, 32, 128)
    with torch.no_grad():
        fast = small_model(cube)
        set_fast_attention(small_model, False)
        plain = small_model(cube)
        set_fast_attention(small_model, True)
    assert fast.abs().max() > 0
    assert (fast - plain).abs().max() <= 1e-5 * fast.abs().max()


# --------------------------------------------------------------------------- forward
def test_reduce_true_equals_reduced_pv_image(small_model):
    cube = torch.rand(2, 1, 128, 32, 128)
    pv = small_model.reduce(cube)
    assert pv.shape == (2, 1, 128, 128)
    torch.testing.assert_close(pv, cube.mean(dim=3))
    with torch.no_grad():
        torch.testing.assert_close(small_model(cube), small_model(pv, reduce=False))


def test_max_reduction_uses_the_latitude_maximum(small_model):
    maxed = Reverter(SMALL, reduction="max").eval()
    maxed.load_state_dict(small_model.state_dict())
    cube = torch.rand(1, 1, 128, 32, 128)
    torch.testing.assert_close(maxed.reduce(cube), cube.amax(dim=3))
    with torch.no_grad():
        assert not torch.allclose(maxed(cube), small_model(cube))
        torch.testing.assert_close(maxed(cube), small_model(cube.amax(dim=3), reduce=False))


@pytest.mark.parametrize(
    "inputs, reduce, message",
    [
        (torch.zeros(1, 1, 128, 16, 128), True, r"expected \(B,1,128,32,128\) = \(B,1,lon,lat,v\) for grid SMALL"),
        (torch.zeros(1, 1, 128, 128), True, "pass reduce=False"),
        (torch.zeros(1, 1, 128, 32, 128), False, "pass reduce=True"),
        (torch.zeros(1, 128, 128), False, r"expected \(B,1,128,128\) = \(B,1,lon,v\)"),
    ],
)
def test_wrong_shapes_are_explained(small_model, inputs, reduce, message):
    with pytest.raises(ValueError, match=message):
        small_model(inputs, reduce=reduce)


def test_wrong_types_are_explained(small_model):
    with pytest.raises(TypeError, match="torch.as_tensor"):
        small_model(np.zeros((1, 1, 128, 32, 128), dtype=np.float32))
    with pytest.raises(TypeError, match="floating point"):
        small_model(torch.zeros(1, 1, 128, 32, 128, dtype=torch.int64))


def test_gradients_reach_every_parameter_in_training():
    model = Reverter(grid_of(64)).train()
    out = model(torch.rand(2, 1, 64, 8, 64))
    out.mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing


# --------------------------------------------------------------------------- units
def test_call_in_units_input_units(small_model):
    cube_k = torch.rand(1, 1, 128, 32, 128) * 5
    with torch.no_grad():
        in_k = small_model.call_in_units(cube_k, "K", "Msun/pc3")
        in_mk = small_model.call_in_units(cube_k * 1000, u.mK, "Msun/pc3")
        direct = small_model(cube_k)
    assert in_k.abs().max() > 0
    assert (in_mk - in_k).abs().max() <= 1e-5 * in_k.abs().max()  # float32 rounding of x * 1000 * 0.001
    torch.testing.assert_close(in_k, direct)


def test_multi_unit_call_is_the_former_name_of_call_in_units(small_model):
    assert Reverter.multi_unit_call is Reverter.call_in_units


def test_channels_last_converts_the_weights_both_ways():
    model = randomise(Reverter(SMALL, width=0.25), seed=1).eval()
    weight = model.encoder[0].weight
    pv = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        plain = model(pv, reduce=False)
        assert not model.channels_last
        model.channels_last = True
        assert model.channels_last and model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert (model(pv, reduce=False) - plain).abs().max() <= 1e-4 * plain.abs().max()  # float rounding
        model.channels_last = False
        assert not model.channels_last and model.encoder[0].weight.is_contiguous()
    assert weight.shape == model.encoder[0].weight.shape


def test_call_in_units_output_units(small_model):
    cube = torch.rand(1, 1, 128, 32, 128)
    with torch.no_grad():
        msun = small_model.call_in_units(cube, "K", "Msun/pc3")
        grams = small_model.call_in_units(cube, "K", u.g / u.cm**3)
        number = small_model.call_in_units(cube, "K", "cm-3")
    factor = (1 * u.Msun / u.pc**3).to_value(u.g / u.cm**3)
    assert msun.abs().max() > 0
    torch.testing.assert_close(grams, msun * factor, rtol=1e-5, atol=0)
    h2 = (1 * u.Msun / u.pc**3 / (2.01588 * u.u)).to_value(u.cm**-3)
    torch.testing.assert_close(number, msun * h2, rtol=1e-5, atol=0)


def test_intensity_and_temperature_convert_through_rayleigh_jeans(small_model):
    cube_k = torch.rand(1, 1, 128, 32, 128) * 3
    nu = SMALL.rest_frequency * u.GHz
    mjy_per_k = (1 * u.K).to_value(u.MJy / u.sr, equivalencies=u.brightness_temperature(nu))
    with torch.no_grad():
        from_t = small_model.call_in_units(cube_k, "K", "Msun/pc3", in_space="temperature")
        from_i = small_model.call_in_units(cube_k * mjy_per_k, "MJy/sr", "Msun/pc3", in_space="intensity")
    assert (from_i - from_t).abs().max() <= 1e-5 * from_t.abs().max()
    # a model trained on intensity gets temperatures converted the other way
    i_model = Reverter(SMALL, input_space="intensity", units={"intensity": "Jy/sr"})
    assert i_model.input_scale("K", "temperature") == pytest.approx(mjy_per_k * 1e6, rel=1e-6)


def test_unit_errors_come_before_the_network(small_model):
    wrong_shape = torch.zeros(1, 1, 7, 7, 7)
    with pytest.raises(ValueError, match="trained on 'temperature'"):
        small_model.call_in_units(wrong_shape, "solMass s / (km pc2)", "Msun/pc3", in_space="v_density")
    with pytest.raises(ValueError, match="in_space must be one of"):
        small_model.call_in_units(wrong_shape, "K", "Msun/pc3", in_space="N")
    with pytest.raises(ValueError, match="brightness_scale"):
        small_model.call_in_units(wrong_shape, "Jy/beam", "Msun/pc3")
    with pytest.raises(ValueError, match="cannot convert density"):
        small_model.call_in_units(wrong_shape, "K", "km/s")
    vrho_model = Reverter(SMALL, input_space="v_density")
    with pytest.raises(ValueError, match="trained on 'v_density'"):
        vrho_model.call_in_units(wrong_shape, "K", "Msun/pc3", in_space="temperature")
    assert vrho_model.input_scale("g s / (cm2 km)", "v_density") == pytest.approx(
        (1 * u.g / u.cm**2 / (u.km / u.s)).to_value(u.Msun / u.pc**2 / (u.km / u.s)))


# --------------------------------------------------------------------------- fast inference
@pytest.mark.parametrize("conv_cls, groups", [(nn.Conv2d, 1), (nn.Conv2d, 4), (nn.ConvTranspose2d, 1),
                                              (nn.ConvTranspose2d, 4)])
def test_fold_batch_norm_matches_conv_then_norm(conv_cls, groups):
    torch.manual_seed(2)
    conv = conv_cls(8, 12, 4, 2, 1, groups=groups)
    norm = randomise(nn.BatchNorm2d(12)).eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(fold_batch_norm(conv, norm)(x), norm(conv(x)), rtol=1e-5, atol=1e-5)


def test_optimized_copy_gives_the_same_numbers_and_leaves_the_original(small_model):
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    fast = optimize_for_inference(small_model)
    cube = torch.rand(2, 1, 128, 32, 128)
    with torch.inference_mode():
        reference = small_model(cube)
        optimized = fast(cube)
    assert fast.inference_only and not small_model.inference_only
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert isinstance(fast.encoder._9_1_convolution, PatchLinear)
    assert isinstance(fast.decoder._7_1_transpose_convolution, SubPixelConvTranspose2d)
    assert (optimized - reference).abs().max() <= 1e-4 * reference.abs().max()
    for key, value in small_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert fast.units == small_model.units and fast.grid == small_model.grid
    with pytest.raises(ValueError, match="save the original model"):
        fast.save("never-written.pt")


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(16, 32, 2, 2), (3, 16, 6, 4)),
        (nn.Conv2d(32, 64, 2, 1, groups=4), (3, 32, 2, 2)),  # the 2 x 2 -> 1 x 1 bottleneck
        (nn.Conv2d(32, 64, 2, 1, groups=4), (3, 32, 3, 3)),  # overlapping: falls back to the conv
        (nn.ConvTranspose2d(64, 32, 2, 1, groups=4), (3, 64, 1, 1)),
        (nn.ConvTranspose2d(64, 32, 2, 1, groups=4), (3, 64, 2, 2)),  # overlapping: falls back
        (nn.ConvTranspose2d(32, 16, 2, 2), (3, 32, 2, 3)),
    ],
)
def test_patch_linear_equals_the_convolution(layer, shape):
    torch.manual_seed(4)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(PatchLinear(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in, c_out", [(4, 1), (16, 4), (8, 8)])
def test_sub_pixel_transpose_convolution_equals_the_original(c_in, c_out):
    torch.manual_seed(6)
    layer = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    x = torch.randn(2, c_in, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(SubPixelConvTranspose2d(layer)(x), layer(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="k4 s2 p1"):
        SubPixelConvTranspose2d(nn.ConvTranspose2d(c_in, c_out, 2, 2))


def test_depth_space_rearrangements_match_pixel_shuffle():
    x = torch.randn(2, 12, 5, 3)
    assert torch.equal(depth_to_space(x, 2), torch.nn.functional.pixel_shuffle(x, 2))
    y = torch.randn(2, 3, 6, 4)
    assert torch.equal(space_to_depth(y, 2), torch.nn.functional.pixel_unshuffle(y, 2))
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(depth_to_space(cl, 2), torch.nn.functional.pixel_shuffle(x, 2))
