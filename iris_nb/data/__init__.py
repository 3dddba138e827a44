"""Training-data stores: write simulated pairs to zarr, read them as torch datasets.

::

    from iris_nb.data import write_dataset, PreObservedDataset
    write_dataset("cmz_small.zarr", n=1024, grid=iris_nb.SMALL, observer=LineObserver(iris_nb.SMALL))
    train = PreObservedDataset("cmz_small.zarr", split="train")
    observation, target = train[0]     # (1, lon, v) and (1, distance, lon), float32
"""

from .datasets import ConcatDataset, PreObservedDataset
from .field_datasets import GasModelDataset
from .reference import convert_iris_dataset, read_iris_dataset
from .samplers import ChunkShuffleSampler
from .stream import FieldStream, ReplaySampler
from .store import estimate_store_bytes, is_store, open_store, sample_seed, store_info, write_dataset

__all__ = [
    "ChunkShuffleSampler",
    "ConcatDataset",
    "FieldStream",
    "GasModelDataset",
    "PreObservedDataset",
    "ReplaySampler",
    "convert_iris_dataset",
    "estimate_store_bytes",
    "is_store",
    "open_store",
    "read_iris_dataset",
    "sample_seed",
    "store_info",
    "write_dataset",
]
