"""The batched torch gas model against the numpy make_cmz: same draws, same gas statistics."""

import json
import math

import numpy as np
import pytest
import torch

from iris_nb import grids
from iris_nb.sim import CMZModel, make_cmz
from iris_nb.sim.fields import validate_field

GRID = grids.SMALL
SEEDS = list(range(100, 116))


@pytest.fixture(scope="module")
def pairs():
    """(torch batch, smooth torch batch, numpy fields) for SEEDS."""
    model = CMZModel(GRID)
    batch = model.sample(SEEDS)
    smooth = CMZModel(GRID, turbulence_sigma=0.0, velocity_dispersion=0.0).sample(SEEDS)
    return batch, smooth, [make_cmz(GRID, seed=s) for s in SEEDS]


def test_parameter_draws_are_make_cmz_draws():
    fixed = {"ring_bar_angle": 95.0, "cloud_count": 7}
    drawn = CMZModel(GRID, **fixed).parameters([3, 17, 2**40])
    for seed, params in zip([3, 17, 2**40], drawn):
        reference = json.loads(make_cmz(GRID, seed=seed, **fixed).attrs["parameters"])
        assert set(params) == set(reference)
        for key, value in reference.items():
            assert params[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert drawn[0]["cloud_count"] == 7 and drawn[1]["ring_bar_angle"] == 95.0


def test_smooth_structure_equals_make_cmz():
    """Without turbulence the two models are the same formula: ring, stream, lanes, clouds, disc."""
    fixed = {"turbulence_sigma": 0.0, "velocity_dispersion": 0.0}
    seeds = [4, 5, 11]
    batch = CMZModel(GRID, **fixed).sample(seeds)
    for i, seed in enumerate(seeds):
        ref = make_cmz(GRID, seed=seed, **fixed)
        rho = ref["density"].values
        got = batch["density"][i].numpy()
        assert np.abs(got - rho).max() <= 1e-3 * rho.max()
        dv = np.abs(batch["velocity_los"][i].numpy() - ref["velocity_los"].values)
        assert (dv * rho).sum() / rho.sum() < 0.01  # km/s, mass-weighted
        assert np.mean(dv > 0.5) < 1e-3  # only cells at the edge of a lane's 6-width reach differ
        for name in ("temperature", "x_h2", "x_tracer", "temperature_dust"):
            off = np.abs(batch[name][i].numpy() - ref[name].values) > 0.01 * np.abs(ref[name].values) + 1e-12
            assert np.mean(off) < 1e-3, name  # again only at a lane's edge
    assert torch.all(batch["turbulent_b"].flatten() == torch.tensor(
        [p["turbulent_b"] for p in CMZModel(GRID).parameters(seeds)], dtype=torch.float32))


def test_turbulent_statistics_agree(pairs):
    batch, smooth, fields = pairs
    smooth_mass = smooth["density"].double().sum(dim=(1, 2, 3))
    torch_ratio = (batch["density"].double().sum(dim=(1, 2, 3)) / smooth_mass).numpy()
    numpy_ratio = np.array([float(f["density"].sum()) for f in fields]) / smooth_mass.numpy()
    # the log-normal factor has mean one in both: the turbulent mass scatters around the smooth mass
    assert abs(np.mean(torch_ratio) - 1) < 0.2 and abs(np.mean(numpy_ratio) - 1) < 0.2
    assert abs(np.median(torch_ratio) - np.median(numpy_ratio)) < 0.15

    def moments(rho, v):
        w = rho / rho.sum()
        mean = (w * v).sum()
        return mean, math.sqrt((w * (v - mean) ** 2).sum())

    t_disp = [moments(batch["density"][i].double().numpy(), batch["velocity_los"][i].double().numpy())[1]
              for i in range(len(SEEDS))]
    n_disp = [moments(f["density"].values.astype(float), f["velocity_los"].values.astype(float))[1] for f in fields]
    assert np.median(t_disp) == pytest.approx(np.median(n_disp), rel=0.15)
    for name in ("temperature", "x_h2"):
        assert batch[name].mean().item() == pytest.approx(np.mean([f[name].values.mean() for f in fields]), rel=0.03)


def _radial_power(field: np.ndarray, bins: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.fftn(field)) ** 2
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 * n ** 2 / max(field.shape) ** 2 for n in field.shape],
                                indexing="ij")))
    index = np.digitize(k.ravel(), bins)
    return np.array([power.ravel()[index == i].mean() for i in range(1, len(bins))])


def test_density_spectrum_agrees():
    """ln(density / smooth density) of both models has the same power spectrum."""
    sigma, slope, seeds = 0.05, 3.5, [21, 22, 23, 24]
    fixed = {"turbulence_slope": slope, "velocity_dispersion": 0.0}
    smooth = CMZModel(GRID, turbulence_sigma=0.0, **fixed).sample(seeds)["density"].double().numpy()
    turbulent = CMZModel(GRID, turbulence_sigma=sigma, **fixed).sample(seeds)["density"].double().numpy()
    bins = np.array([0.02, 0.04, 0.08, 0.16, 0.32])
    p_torch = np.mean([_radial_power(np.log(turbulent[i] / smooth[i]) / sigma, bins) for i in range(4)], axis=0)
    p_numpy = np.mean([_radial_power(np.log(make_cmz(GRID, seed=s, turbulence_sigma=sigma, **fixed)["density"].values
                                            / smooth[i]) / sigma, bins) for i, s in enumerate(seeds)], axis=0)
    np.testing.assert_allclose(p_torch, p_numpy, rtol=0.35)
    assert p_torch[0] > 10 * p_torch[-1]  # a steep spectrum, not white noise


def test_same_seed_same_field_whatever_the_batch():
    model = CMZModel(GRID)
    alone = model.sample([7])
    batch = model.sample([1, 7, 9])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = model.sample([9, 7])
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    for name, value in alone.items():
        assert torch.equal(value[0], batch[name][1]), name
        assert torch.equal(value[0], serial[name][1]), name
    assert not torch.equal(batch["density"][0], batch["density"][2])


def test_field_is_a_validated_dataset():
    field = CMZModel(GRID, cloud_count=3).field(5)
    assert validate_field(field) == GRID
    assert field.attrs["model"] == "CMZModel" and field.attrs["seed"] == 5
    assert json.loads(field.attrs["parameters"])["cloud_count"] == 3


def test_bad_input_is_refused_before_work():
    model = CMZModel(GRID)
    with pytest.raises(TypeError, match="single integer"):
        model.sample(5)
    with pytest.raises(TypeError, match="non-negative integer"):
        model.sample([1, -2])
    with pytest.raises(TypeError, match="non-negative integer"):
        model.sample([1.5])
    with pytest.raises(ValueError, match="empty"):
        model.sample([])
    with pytest.raises(TypeError, match="make_cmz"):
        CMZModel(GRID, ring_sizes=3)
    with pytest.raises(ValueError, match="not a torch device|not supported"):
        model.sample([1], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            model.sample([1], device="cuda")
    with pytest.raises(MemoryError, match="lower the batch"):
        CMZModel(grids.SEDIGISM).sample(range(100_000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fields_match_the_cpu_statistics():
    model = CMZModel(GRID)
    gpu = model.sample(SEEDS, device="cuda")
    assert gpu["density"].device.type == "cuda"
    again = model.sample(SEEDS[3:5], device="cuda")
    assert torch.equal(gpu["density"][3:5], again["density"])
    cpu = model.sample(SEEDS)
    smooth = CMZModel(GRID, turbulence_sigma=0.0, velocity_dispersion=0.0).sample(SEEDS, device="cuda")
    ratio = (gpu["density"].double().sum(dim=(1, 2, 3)) / smooth["density"].double().sum(dim=(1, 2, 3))).cpu()
    assert abs(ratio.mean().item() - 1) < 0.2
    assert gpu["temperature"].mean().item() == pytest.approx(cpu["temperature"].mean().item(), rel=0.03)
