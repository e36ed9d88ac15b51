"""bench:dp runs every variant side by side on a small batch (timings are not asserted: speed
targets live in the benchmark, never in timed tests)."""
from __future__ import annotations

import pytest

from dpalign_worker.bench import dp
from dpalign_worker.engine.opacus_backend import available

pytestmark = [pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
              pytest.mark.filterwarnings("ignore:CPU Autocast only supports"),
              pytest.mark.filterwarnings("ignore:In CPU autocast")]


def _args(*extra):
    return dp.parse_args(["--preset", "tiny", "--batch", "4", "--seq-len", "16", "--reps", "1", "--warmup", "0",
                          "--no-mem", *extra])


def test_every_variant_runs_or_says_why():
    rows = dp.run(_args())
    got = {(r["mode"], r["variant"]): r for r in rows}
    want = {"nonprivate", "dpalign"} | ({"dpalign+opacus", "opacus-hooks", "opacus-functorch", "opacus-ghost"}
                                        if available() else set())
    for mode in ("lora", "full"):
        for v in want:
            r = got[(mode, v)]
            assert "error" in r or (r["median_s"] > 0 and r["ratio"] > 0), r
    assert got[("lora", "nonprivate")]["ratio"] == 1.0
    if available():
        # LoRA runs in every mode; Opacus's ghost clipping refuses GPT-2's tied embeddings
        assert all("error" not in got[("lora", v)] for v in want)
        assert "tying" in got[("full", "opacus-ghost")].get("error", "")
        assert got[("lora", "peft-nonprivate")]["trainable"] == got[("lora", "dpalign")]["trainable"]
