"""The data-parallel benchmark runs end to end on a very small setting and reports every layout."""
from __future__ import annotations

import json

from dpalign_worker.bench import dp_parallel


def test_bench_reports_each_layout(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--layouts", "1x1,2x1", "--batch", "4", "--seq-len", "8", "--n-layer", "1", "--n-embd", "16",
            "--steps", "1", "--warmup", "0", "--rounds", "1", "--json", str(out)]
    assert dp_parallel.main(argv) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["workers"], r["threads"]) for r in rows] == [(1, 1), (2, 1)]
    for r in rows:
        assert r["step_s"] > 0 and r["samples_per_s"] == 4 / r["step_s"]
    assert rows[0]["speedup"] == 1.0
