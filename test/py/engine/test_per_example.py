"""Per-example gradients (torch.func vmap) equal gradients computed one example at a time."""
from __future__ import annotations

import sys
import types

import pytest
import torch
from conftest import PPO, cls_batch, lm_batch, make_model, pair_batch, perturb_lora, ppo_batch

from dpalign_worker.engine.objectives import get_objective
from dpalign_worker.engine.optim import OptimizerConfig
from dpalign_worker.engine.per_example import _forward_fn, per_example_grads
from dpalign_worker.errors import WorkerError
from dpalign_worker.protocol import worker_pb2 as pb

CASES = [
    ("causal_lm", lm_batch, {"value_head": True}),
    ("classification", cls_batch, {"reward_head": True}),
    ("pairwise_reward", pair_batch, {"reward_head": True}),
    ("ppo", ppo_batch, {"value_head": True}),
]


def one_at_a_time(m, objective, batch, loss_params):
    names = list(m.trainable)
    out = {n: [] for n in names}
    for i in range(next(iter(batch.values())).shape[0]):
        ex = {k: v[i:i + 1] for k, v in batch.items()}
        loss, _ = objective.compute(_forward_fn(m.model, {}), ex, loss_params)
        grads = torch.autograd.grad(loss.sum(), [m.trainable[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            out[n].append(torch.zeros_like(m.trainable[n]) if g is None else g)
    return {n: torch.stack(v) for n, v in out.items()}


@pytest.mark.parametrize("loss,make_batch,heads", CASES, ids=[c[0] for c in CASES])
def test_per_example_equals_one_at_a_time(tok_dir, loss, make_batch, heads):
    m = make_model(tok_dir, **heads)
    perturb_lora(m)
    objective = get_objective(loss)
    batch = objective.prepare(make_batch(5, seed=3), m.pad_id)
    params = PPO if loss == "ppo" else None
    grads, losses, _ = per_example_grads(m.model, objective, batch, m.trainable, params)
    ref = one_at_a_time(m, objective, batch, params)
    assert set(grads) == set(ref) and len(grads) > 0
    for n in grads:
        assert grads[n].shape == ref[n].shape
        torch.testing.assert_close(grads[n], ref[n], atol=1e-5, rtol=1e-5, msg=n)
    assert losses.shape == (5,)
    # every trainable tensor is LoRA or a head
    assert all(".lora_" in n or n.startswith(("value_head", "reward_head")) for n in grads)


def test_full_finetuning_per_example(tok_dir):
    m = make_model(tok_dir, lora_rank=0, train_base=True)
    objective = get_objective("causal_lm")
    batch = objective.prepare(lm_batch(3, seed=5), m.pad_id)
    grads, _, _ = per_example_grads(m.model, objective, batch, m.trainable, None)
    ref = one_at_a_time(m, objective, batch, None)
    for n in grads:
        torch.testing.assert_close(grads[n], ref[n], atol=1e-5, rtol=1e-5, msg=n)


class _Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent Python control flow: cannot be vmapped
            return x * 2
        return x


def _branchy_factory():
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpalign_worker.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(_branchy_factory.tok_dir)
    lm = GPT2LMHeadModel._from_config(
        GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2), attn_implementation="eager")
    lm.transformer.h[0].mlp.act = _Branchy()
    return lm, tok


def test_unvectorisable_module_is_named(tok_dir):
    _branchy_factory.tok_dir = tok_dir
    sys.modules["dpalign_test_branchy"] = types.SimpleNamespace(factory=_branchy_factory)
    from dpalign_worker.engine.dp_step import DpConfig, train_step
    from dpalign_worker.engine.lora import LoraConfig
    from dpalign_worker.engine.models import ModelConfig, build_model

    spec = ModelConfig(entry_point="dpalign_test_branchy:factory",
                       lora=LoraConfig(rank=2, alpha=2, target_modules=("c_attn",)))
    m = build_model("b", spec, "cpu", OptimizerConfig("sgd", lr=0.1))
    with pytest.raises(WorkerError) as e:
        train_step(m, "causal_lm", lm_batch(2), DpConfig(True, 1.0, 1.0, 2.0))
    assert e.value.code == pb.UNSUPPORTED_MODEL
    assert e.value.details["module"] == "lm.transformer.h.0.mlp.act"
