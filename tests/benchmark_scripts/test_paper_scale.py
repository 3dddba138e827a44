"""``benchmarks/paper_scale.py``: every part runs and reports (CPU on SMALL; the real thing on a GPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from iris_nb.model import Reverter

from ._scripts import load_script



def load():
    return load_script("paper_scale")


def check_report(report: dict, out: Path) -> None:
    assert json.loads((out / "paper_scale.json").read_text())["held_out"] == report["held_out"]
    assert report["data"]["pairs_batch1"]["pairs_per_s"] > 0
    assert report["data"]["gas_batch2"]["fields_per_s"] > 0
    assert report["steps"]["fp32"]["samples_per_s"] > 0
    assert report["paper_scale"]["hours_to_draw_100k_pairs"] > 0
    training = report["training"]
    assert training["samples_seen"] > 0 and training["fields_drawn"] > 0
    assert training["fields_drawn"] + training["fields_reused"] == training["samples_seen"]
    assert math.isfinite(report["held_out"]["loss_ratio"]) and -1 <= report["held_out"]["correlation"] <= 1
    assert (out / "run" / "checkpoint.pt").is_file()


def test_smoke_run_on_cpu_reports_every_part_and_resumes(tmp_path):
    module = load()
    args = ["--device", "cpu", "--grid", "small", "--minutes", "0.03", "--test-fields", "2", "--batch", "2",
            "--no-compile", "--repeats", "1", "--out", str(tmp_path)]
    report = module.main(args)
    check_report(report, tmp_path)
    assert report["training"]["stopped_by_clock"]
    assert report["meets_bar"] is False and "shipped" not in report  # an 2-second model is not shipped
    seen = report["training"]["samples_seen"]
    again = module.main(args)  # the same command continues the run from its checkpoint, on the same stream
    assert again["training"]["samples_seen"] > seen
    assert again["stream"] == report["stream"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_run_measures_compile_and_ships_only_past_the_bar(tmp_path):
    module = load()
    report = module.main(["--device", "cuda", "--grid", "small", "--minutes", "0.2", "--test-fields", "4",
                          "--batch", "4", "--repeats", "2", "--ship", "--out", str(tmp_path)])
    check_report(report, tmp_path)
    assert report["data"]["gas_batch1"]["peak_bytes"] > 0
    assert "compile_seconds" in report["steps"]["bf16+channels_last+fused_adam+compile"] or \
        "error" in report["steps"]["bf16+channels_last+fused_adam+compile"]
    if report["meets_bar"]:
        assert Reverter.load(tmp_path / "cmz-sedigism.pt").grid.name == "SMALL"
    else:
        assert not (tmp_path / "cmz-sedigism.pt").exists()
