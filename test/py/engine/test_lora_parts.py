"""LoRA on parts of a fused projection: c_attn[q,v] adapts query and value, never key."""
from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, make_model, perturb_lora, tiny_config
from test_per_example import one_at_a_time

from dpalign_worker.engine import checkpoint
from dpalign_worker.engine.lora import LoraLayer, parse_target
from dpalign_worker.engine.models import build_model
from dpalign_worker.engine.objectives import get_objective
from dpalign_worker.engine.per_example import per_example_grads
from dpalign_worker.errors import WorkerError


def test_parse_target():
    assert parse_target("c_attn[q,v]") == ("c_attn", (0, 2))
    assert parse_target("c_attn[v, q]") == ("c_attn", (0, 2))
    assert parse_target("q_proj") == ("q_proj", None)
    for bad in ("c_attn[x]", "c_attn[]", "[q]", "c_attn[q,q]"):
        with pytest.raises(WorkerError):
            parse_target(bad)


def test_only_query_and_value_outputs_change(tok_dir):
    m = make_model(tok_dir, targets=("c_attn[q,v]",))
    perturb_lora(m)
    layer = m.model.lm.transformer.h[0].attn.c_attn
    assert isinstance(layer, LoraLayer) and layer.lora_B.shape[0] == 2 * 32
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        out, base = layer(x), layer.base_layer(x)
    q, k, v = (out - base).split(32, dim=-1)
    assert torch.count_nonzero(k) == 0
    assert torch.count_nonzero(q) > 0 and torch.count_nonzero(v) > 0


def test_per_example_grads_with_parts(tok_dir):
    m = make_model(tok_dir, targets=("c_attn[q,v]",))
    perturb_lora(m)
    objective = get_objective("causal_lm")
    batch = objective.prepare(lm_batch(4, seed=7), m.pad_id)
    grads, _, _ = per_example_grads(m.model, objective, batch, m.trainable, None)
    ref = one_at_a_time(m, objective, batch, None)
    for n in grads:
        torch.testing.assert_close(grads[n], ref[n], atol=1e-5, rtol=1e-5, msg=n)


def test_merged_checkpoint_matches_adapter(tok_dir, tmp_path):
    m = make_model(tok_dir, targets=("c_attn[q,v]",))
    perturb_lora(m)
    checkpoint.save(m, str(tmp_path / "ck"))
    merged = build_model("n", tiny_config(tok_dir, lora_rank=0, init_checkpoint=str(tmp_path / "ck")), "cpu", None)
    ids = lm_batch(2, seed=1)["input_ids"]
    m.model.eval()
    merged.model.eval()
    with torch.no_grad():
        a = m.model.lm(input_ids=ids).logits
        b = merged.model.lm(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
