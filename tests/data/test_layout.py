"""Store layout: metadata written before a rename still reads under today's names."""

import json

import zarr

from iris_nb.data.store import store_info, write_dataset
from iris_nb.sim.observers import SimpleObserver

from ._models import TINY, cloud_model


def test_a_store_with_the_old_input_space_code_reads_and_resumes(tmp_path):
    path = write_dataset(tmp_path / "old.zarr", 2, TINY, model=cloud_model, observer=SimpleObserver(TINY),
                         workers=0, progress=False)
    group = zarr.open_group(str(path), mode="r+")
    observer = json.loads(group.attrs["observer"])
    assert observer["input_space"] == "v_density"
    group.attrs["observer"] = json.dumps({**observer, "input_space": "vrho"})  # as stores were written before
    assert store_info(path).observer["input_space"] == "v_density"
    # the same arguments still match the old store: writing again is a no-op, not a refusal
    write_dataset(path, 2, TINY, model=cloud_model, observer=SimpleObserver(TINY), workers=0, progress=False)
