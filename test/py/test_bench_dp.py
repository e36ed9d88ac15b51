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
    want = {"nonprivate", "dpalign", "dpalign-vmap"} | ({"dpalign+opacus", "opacus-hooks", "opacus-functorch", "opacus-ghost"}
                                        if available() else set())
    for mode in ("lora", "full"):
        for v in want:
            r = got[(mode, v)]
            assert "error" in r or (r["median_s"] > 0 and r["ratio"] > 0), r
    assert got[("lora", "nonprivate")]["ratio"] == 1.0
    assert {r["precision"] for r in rows} == {"fp32"}
    for mode in ("lora", "full"):  # the ghost-norm default and the torch.func path both run
        assert "error" not in got[(mode, "dpalign")] and "error" not in got[(mode, "dpalign-vmap")]
    if available():
        # LoRA runs in every mode; Opacus's ghost clipping refuses GPT-2's tied embeddings
        assert all("error" not in got[("lora", v)] for v in want)
        assert "tying" in got[("full", "opacus-ghost")].get("error", "")
        assert got[("lora", "peft-nonprivate")]["trainable"] == got[("lora", "dpalign")]["trainable"]


def test_gpt2_small_preset_smoke_bf16_and_json(tmp_path):
    """The GPU preset, scaled down for CPU: both precisions, its default variants, JSON to a file."""
    import json

    out = tmp_path / "rows.json"
    args = dp.parse_args(["--preset", "gpt2-small", "--n-layer", "1", "--n-embd", "48", "--vocab", "500",
                          "--batch", "2", "--seq-len", "8", "--reps", "1", "--warmup", "0", "--no-mem",
                          "--no-noise", "--json", str(out)])
    assert args.precisions == ["fp32", "bf16"]
    dp.main(["--preset", "gpt2-small", "--n-layer", "1", "--n-embd", "48", "--vocab", "500", "--batch", "2",
             "--seq-len", "8", "--reps", "1", "--warmup", "0", "--no-mem", "--no-noise", "--json", str(out)])
    rows = json.loads(out.read_text())["steps"]
    got = {(r["mode"], r["precision"], r["variant"]): r for r in rows}
    for mode in ("lora", "full"):
        for prec in ("fp32", "bf16"):
            for v in ("nonprivate", "dpalign", "dpalign-vmap"):
                r = got[(mode, prec, v)]
                assert "error" not in r and r["median_s"] > 0 and r["batch"] == 2 and r["seq_len"] == 8, r
    assert got[("full", "fp32", "dpalign")]["trainable"] == got[("full", "fp32", "nonprivate")]["trainable"]
