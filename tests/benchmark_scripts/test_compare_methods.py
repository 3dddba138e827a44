"""``benchmarks/compare_methods.py`` on a tiny run: every row is trained, scored and written."""

from __future__ import annotations

import json
import math

from ._scripts import load_script



def test_every_method_is_scored(tmp_path):
    module = load_script("compare_methods")
    out = tmp_path / "compare.json"
    result = module.main(["--train", "16", "--test", "4", "--epochs", "1", "--rim-epochs", "1", "--rim-steps", "1",
                          "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["IRIS CNN", "+ synthesis head", "+ column consistency", "two-output CNN", "+ RIM",
                          "ensemble of 3"]
    assert rows == json.loads(json.dumps(result["rows"], default=float))
    for name, row in rows.items():
        assert math.isfinite(row["loss_ratio"]) and row["parameters"] > 0 and row["images_per_s"] > 0, name
    assert rows["+ column consistency"]["mass_error"] < 0.05  # the PV's column fixes the mass
    assert rows["ensemble of 3"]["spread_skill"] > 0 and rows["IRIS CNN"]["spread_skill"] is None
    assert rows["+ RIM"]["pv_residual"] is not None and rows["IRIS CNN"]["pv_residual"] is None
