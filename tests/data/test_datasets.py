"""PreObservedDataset, ConcatDataset and ChunkShuffleSampler over real stores."""

import pickle

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader, Subset

from iris_nb.data.datasets import ChunkShuffleSampler, ConcatDataset, PreObservedDataset, split_indices
from iris_nb.data.samplers import chunk_ids_of
from iris_nb.data.store import sample_seed, store_info, write_dataset
from iris_nb.sim.observers import SimpleObserver
from iris_nb.units import density_scale

from ._models import TINY, FailingModel, cloud_model

N = 12


class PerMetreObserver(SimpleObserver):
    """SimpleObserver reporting the column per m/s instead of per km/s (a store in other units)."""

    units = "solMass s / (m pc2)"

    def forward(self, fields):
        return super().forward(fields) * 1e-3


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    km = write_dataset(root / "km.zarr", N, TINY, observer=SimpleObserver(TINY), seed=5, workers=0, chunk_size=4,
                       progress=False)
    metre = write_dataset(root / "m.zarr", N, TINY, observer=PerMetreObserver(TINY), seed=5, workers=0,
                          chunk_size=4, progress=False)
    return {"km": km, "m": metre}


def _all_items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_splits_are_disjoint_seeded_and_cover_the_store(stores):
    splits = {s: PreObservedDataset(stores["km"], split=s, seed=1) for s in ("train", "validation", "test")}
    sets = {s: set(d.indices.tolist()) for s, d in splits.items()}
    assert set().union(*sets.values()) == set(range(N))
    assert sum(len(v) for v in sets.values()) == N
    assert [len(sets[s]) for s in ("train", "validation", "test")] == [9, 2, 1]  # 12 - round(2.4) - round(1.2)
    again = PreObservedDataset(stores["km"], split="validation", seed=1)
    assert again.indices.tolist() == splits["validation"].indices.tolist()
    others = {tuple(PreObservedDataset(stores["km"], split="validation", seed=s).indices) for s in range(2, 8)}
    assert len(others) > 1


def test_items_are_the_stored_pairs_as_float32_channels(stores):
    ds = PreObservedDataset(stores["km"], split="train")
    stored = xr.open_zarr(stores["km"])
    observation, target = ds[3]
    assert observation.shape == (1, TINY.lon.steps, TINY.velocity.steps)
    assert target.shape == (1, TINY.distance.steps, TINY.lon.steps)
    assert observation.dtype == target.dtype == torch.float32
    sample = int(ds.indices[3])
    np.testing.assert_array_equal(observation[0].numpy(), stored["observation"][sample].values)
    np.testing.assert_array_equal(target[0].numpy(), stored["target"][sample].values)
    assert ds.grid == TINY and ds.reduction == "mean"
    assert ds.units == {"observation": "solMass s / (km pc2)", "target": "solMass / pc3"}
    assert ds.observer["class"].endswith("SimpleObserver")
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_units_are_converted(stores):
    base = PreObservedDataset(stores["km"])
    per_metre = PreObservedDataset(stores["km"], units={"observation": "solMass s / (m pc2)", "target": "g / cm3"})
    numbers = PreObservedDataset(stores["km"], units={"target": "cm-3"})
    obs, tgt = base[0]
    obs_m, tgt_g = per_metre[0]
    torch.testing.assert_close(obs_m, obs * 1e-3)
    torch.testing.assert_close(tgt_g, tgt * density_scale("solMass / pc3", "g / cm3"))
    torch.testing.assert_close(numbers[0][1], tgt * density_scale("solMass / pc3", "cm-3"))
    with pytest.raises(ValueError, match="cannot convert observations"):
        PreObservedDataset(stores["km"], units={"observation": "K"})
    with pytest.raises(ValueError, match="unknown keys"):
        PreObservedDataset(stores["km"], units={"density": "g/cm3"})


def test_empty_or_impossible_splits_are_clear_errors(stores):
    with pytest.raises(ValueError, match="validation_fraction 0.99 .* leave no training samples"):
        PreObservedDataset(stores["km"], validation_fraction=0.99)
    with pytest.raises(ValueError, match="validation split .* is empty"):
        PreObservedDataset(stores["km"], split="validation", validation_fraction=0.0)
    with pytest.raises(ValueError, match="split 'valid' is not known"):
        PreObservedDataset(stores["km"], split="valid")
    with pytest.raises(ValueError, match="not an iris_nb dataset store"):
        PreObservedDataset(stores["km"] / "observation")


def test_only_completed_chunks_count(tmp_path):
    path = tmp_path / "partial.zarr"
    with pytest.raises(RuntimeError):
        write_dataset(path, 10, TINY, model=FailingModel(sample_seed(0, 5)), workers=0, chunk_size=2,
                      progress=False)
    assert store_info(path).n_done == 4
    items = set()
    for split in ("train", "validation", "test"):
        try:
            items |= set(PreObservedDataset(path, split=split).indices.tolist())
        except ValueError as err:
            assert "is empty" in str(err)
    assert items == {0, 1, 2, 3}
    # the split of a sample does not move once the rest of the store is written
    before = split_indices(10, np.arange(4), "train")
    after = split_indices(10, np.arange(10), "train")
    assert set(before.tolist()) == set(after.tolist()) & {0, 1, 2, 3}


def test_in_memory_and_float16_stores_give_the_same_items(tmp_path, stores):
    lazy = PreObservedDataset(stores["km"], split="test")
    memory = PreObservedDataset(stores["km"], split="test", in_memory=True)
    for (a, b), (c, d) in zip(_all_items(lazy), _all_items(memory)):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, d, rtol=0, atol=0)
    half = write_dataset(tmp_path / "half.zarr", N, TINY, observer=SimpleObserver(TINY), seed=5, dtype="float16",
                         workers=0, chunk_size=4, progress=False)
    half_items = PreObservedDataset(half, split="test")
    assert half_items.indices.tolist() == lazy.indices.tolist()
    obs, tgt = half_items[0]
    assert obs.dtype == torch.float32
    torch.testing.assert_close(obs, lazy[0][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(tgt, lazy[0][1], rtol=1e-3, atol=1e-3)


def test_concat_converts_to_the_first_stores_units(stores):
    km = PreObservedDataset(stores["km"])
    metre = PreObservedDataset(stores["m"])
    assert metre.units["observation"] == "solMass s / (m pc2)"
    both = ConcatDataset([km, metre])
    assert len(both) == 2 * len(km) and both.units == km.units
    for i in (0, 5):  # same seeds, so the second store holds the same gas
        torch.testing.assert_close(both[len(km) + i][0], km[i][0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(both[len(km) + i][1], km[i][1])
    reverse = ConcatDataset([metre, km])
    torch.testing.assert_close(reverse[len(metre)][0], metre[0][0], rtol=1e-5, atol=1e-10)
    ids = both.chunk_ids()
    assert len(ids) == len(both) and set(ids[:len(km)].tolist()).isdisjoint(ids[len(km):].tolist())


def test_concat_refuses_other_grids_and_reductions(tmp_path, stores):
    other_grid = TINY.replace(lat=TINY.lat.with_steps(4))
    a = write_dataset(tmp_path / "a.zarr", 4, other_grid, model=cloud_model, workers=0, progress=False)
    b = write_dataset(tmp_path / "b.zarr", 4, TINY, model=cloud_model, reduction="max", workers=0, progress=False)
    base = PreObservedDataset(stores["km"])
    with pytest.raises(ValueError, match="same grid"):
        ConcatDataset([base, PreObservedDataset(a, validation_fraction=0, test_fraction=0)])
    with pytest.raises(ValueError, match="same reduction"):
        ConcatDataset([base, PreObservedDataset(b, validation_fraction=0, test_fraction=0)])


def test_chunk_shuffle_sampler_orders(stores):
    ds = PreObservedDataset(stores["km"], validation_fraction=0, test_fraction=0)
    chunks = ds.chunk_ids()
    sampler = ChunkShuffleSampler(ds, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second  # a new order each epoch
    changes = sum(chunks[a] != chunks[b] for a, b in zip(first, first[1:]))
    assert changes == len(set(chunks.tolist())) - 1  # each chunk visited in one go
    sampler.set_epoch(4)
    assert list(sampler) == list(sampler)
    # three workers, batches of 2 (batch k goes to worker k % 3): each worker reads its own
    # chunks, except at most 2 chunks at the boundaries of the workers' streams
    order = list(ChunkShuffleSampler(ds, seed=3, num_workers=3, batch_size=2))
    assert sorted(order) == list(range(N))
    batches = [order[i:i + 2] for i in range(0, len(order), 2)]
    worker_chunks = [{int(chunks[i]) for b in batches[w::3] for i in b} for w in range(3)]
    shared = [c for c in set(chunks.tolist()) if sum(c in w for w in worker_chunks) > 1]
    assert len(shared) <= 2 and sum(len(w) for w in worker_chunks) <= len(set(chunks.tolist())) + 2
    # replicas: equal shares that together cover the data
    shares = [list(ChunkShuffleSampler(ds, seed=3, num_replicas=5, rank=r)) for r in range(5)]
    assert {len(s) for s in shares} == {3} and set().union(*map(set, shares)) == set(range(N))
    with pytest.raises(ValueError, match="rank 2 must be below"):
        ChunkShuffleSampler(ds, num_replicas=2, rank=2)


def test_strided_shares_match_one_process_and_subsets_keep_their_chunks(stores):
    ds = PreObservedDataset(stores["km"], validation_fraction=0, test_fraction=0)
    chunks = ds.chunk_ids()
    whole = list(ChunkShuffleSampler(ds, seed=5, strided=True))
    shares = [list(ChunkShuffleSampler(ds, seed=5, num_replicas=2, rank=r, strided=True)) for r in range(2)]
    # rank r holds items r, r + 2, ... of the one-process order (padded by wrapping around)
    padded = (whole * 2)[:2 * len(shares[0])]
    assert shares[0] == padded[0::2] and shares[1] == padded[1::2]
    # a Subset keeps the chunk of each of its items, so the sampler still reads chunk by chunk
    subset = Subset(ds, list(range(1, N, 2)))
    assert chunk_ids_of(subset).tolist() == chunks[1::2].tolist()
    order = list(ChunkShuffleSampler(subset, seed=1))
    sub_chunks = chunks[1::2]
    assert sum(sub_chunks[a] != sub_chunks[b] for a, b in zip(order, order[1:])) == len(set(sub_chunks)) - 1
    assert chunk_ids_of(torch.utils.data.TensorDataset(torch.zeros(3))) is None


@pytest.mark.parametrize("workers, context", [(0, None), (2, "fork"),
                                              pytest.param(2, "spawn", marks=pytest.mark.slow)])
def test_dataloader_reads_every_item_once(stores, workers, context):
    ds = PreObservedDataset(stores["km"], split="train")
    ds[0]  # the parent has read (and opened the store) before workers start
    sampler = ChunkShuffleSampler(ds, seed=0, num_workers=workers, batch_size=3)
    loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers, multiprocessing_context=context)
    seen = []
    for observation, target in loader:
        assert observation.shape[1:] == (1, TINY.lon.steps, TINY.velocity.steps)
        seen.append((observation, target))
    observations = torch.cat([o for o, _ in seen])
    assert observations.shape[0] == len(ds)
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    # every item exactly once (compare as sets of rows via sorting on a checksum)
    assert sorted(observations.sum(dim=(1, 2, 3)).tolist()) == pytest.approx(
        sorted(expected.sum(dim=(1, 2, 3)).tolist()))


def test_dataset_pickles_without_open_handles(stores):
    ds = PreObservedDataset(stores["km"])
    before = ds[1]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays is None and not clone._cache
    torch.testing.assert_close(clone[1][0], before[0])
