"""The book-keeping / ghost-norm path (engine/ghost_norms.py) equals torch.func's per-example
gradients: per-example norms and the clipped sum, in float64, for every objective the pipeline
trains, LoRA and full fine-tuning, the tiny model and an HF GPT-2 from its own config; it falls
back to torch.func where it would not be exact, and train_step gives the same update either way."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import PPO, cls_batch, lm_batch, pair_batch, perturb_lora, ppo_batch, tiny_config

from dpalign_worker.engine import dp_step, ghost_norms
from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.engine.lora import LoraConfig
from dpalign_worker.engine.models import ModelConfig, build_model
from dpalign_worker.engine.objectives import get_objective
from dpalign_worker.engine.optim import OptimizerConfig
from dpalign_worker.engine.per_example import per_example_grads

OBJECTIVES = [
    ("causal_lm", lm_batch, {"value_head": True}),
    ("classification", cls_batch, {"reward_head": True}),
    ("pairwise_reward", pair_batch, {"reward_head": True}),
    ("ppo", ppo_batch, {"value_head": True}),
]


def _f64(cfg: ModelConfig, optimizer: str | None = "sgd", dtype: str = "float64"):
    cfg = dataclasses.replace(cfg, dtype=dtype)
    m = build_model("m", cfg, "cpu", OptimizerConfig(optimizer, lr=1e-2) if optimizer else None)
    perturb_lora(m)
    return m


def _reference(m, objective, batch, loss_params, c):
    grads, losses, _ = per_example_grads(m.model, objective, batch, m.trainable, loss_params)
    factors, norms = dp_step.clip_per_example(grads, c)
    acc = {k: torch.zeros_like(p) for k, p in m.trainable.items()}
    dp_step.accumulate(acc, grads, factors)
    return norms, acc, losses


def _ghost(m, objective, batch, loss_params, c):
    acc = {k: torch.zeros_like(p) for k, p in m.trainable.items()}
    out = ghost_norms.clipped_sum(m.model, objective, batch, m.trainable, loss_params, c, acc)
    assert out is not None, ghost_norms.fallback_reason(m.model, m.trainable, objective.name)
    losses, norms, _ = out
    return norms, acc, losses


def _check_equal(m, loss, batch_fn, n=5, seed=3):
    objective = get_objective(loss)
    batch = objective.prepare(batch_fn(n, seed=seed), m.pad_id)
    params = PPO if loss == "ppo" else None
    ref_norms, _, ref_losses = _reference(m, objective, batch, params, 1.0)
    assert float(ref_norms.max()) > 0
    c = float(ref_norms.median())  # some examples clipped, some not
    ref_norms, ref_acc, _ = _reference(m, objective, batch, params, c)
    norms, acc, losses = _ghost(m, objective, batch, params, c)
    torch.testing.assert_close(norms.double(), ref_norms.double(), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-6, atol=1e-9)
    scale = max(float(v.abs().max()) for v in ref_acc.values())
    for k in ref_acc:
        torch.testing.assert_close(acc[k], ref_acc[k], rtol=1e-6, atol=1e-7 * scale, msg=k)
    return c, norms


@pytest.mark.parametrize("loss,batch_fn,heads", OBJECTIVES, ids=[o[0] for o in OBJECTIVES])
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_tiny_model_equals_vmap(tok_dir, loss, batch_fn, heads, full):
    kw = dict(lora_rank=0, train_base=True) if full else {}
    _check_equal(_f64(tiny_config(tok_dir, **heads, **kw)), loss, batch_fn)


def test_lora_on_fused_parts_and_with_base(tok_dir):
    # c_attn[q,v] scatters two thirds of the output; LoRA and a trainable base in one model
    _check_equal(_f64(tiny_config(tok_dir, targets=("c_attn[q,v]", "c_fc"), value_head=True)), "ppo", ppo_batch)
    _check_equal(_f64(tiny_config(tok_dir, train_base=True, value_head=True)), "causal_lm", lm_batch)


_HF = {}


def _hf_factory():
    """An HF GPT2LMHeadModel from its own small config (GPT-2's own GELU, tied wte/lm_head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpalign_worker.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(_HF["tok_dir"])
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="eager"), tok


@pytest.mark.parametrize("loss,batch_fn,heads", OBJECTIVES, ids=[o[0] for o in OBJECTIVES])
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_hf_gpt2_equals_vmap(tok_dir, loss, batch_fn, heads, full):
    _HF["tok_dir"] = tok_dir
    lora = LoraConfig() if full else LoraConfig(4, 8.0, 0.0, ("c_attn", "c_proj"))
    cfg = ModelConfig(entry_point=f"{__name__}:_hf_factory", lora=lora, train_base=full, **heads)
    m = _f64(cfg)
    assert m.model.lm.lm_head.weight is m.model.lm.transformer.wte.weight  # tied: one norm over both uses
    _check_equal(m, loss, batch_fn, n=6, seed=5)


def test_padding_does_not_leak_between_examples(tok_dir):
    # one example's norm is the same alone and inside a batch padded to a longer neighbour
    m = _f64(tiny_config(tok_dir, lora_rank=0, train_base=True))
    objective = get_objective("causal_lm")
    raw = lm_batch(4, seed=8)
    raw["lengths"][0] = 4
    batch = objective.prepare(raw, m.pad_id)
    norms, _, _ = _ghost(m, objective, batch, None, 1e9)
    alone = objective.prepare({k: v[:1] for k, v in raw.items()}, m.pad_id)
    assert alone["input_ids"].shape[1] < batch["input_ids"].shape[1]
    norm0, _, _ = _ghost(m, objective, alone, None, 1e9)
    torch.testing.assert_close(norm0, norms[:1], rtol=1e-6, atol=0)


def test_clipped_example_has_norm_at_most_c(tok_dir):
    m = _f64(tiny_config(tok_dir, lora_rank=0, train_base=True, value_head=True))
    objective = get_objective("ppo")
    batch = objective.prepare(ppo_batch(4, seed=2), m.pad_id)
    norms, _, _ = _ghost(m, objective, batch, PPO, 1e9)
    c = float(norms.median())
    for i in range(4):  # each example alone: its clipped gradient is the whole sum
        one = {k: v[i:i + 1] for k, v in batch.items()}
        n1, acc, _ = _ghost(m, objective, one, PPO, c)
        total = float(torch.sqrt(sum(v.pow(2).sum() for v in acc.values())))
        assert total <= c * (1 + 1e-9)
        assert total == pytest.approx(min(float(n1[0]), c), rel=1e-9)


class _Scale(torch.nn.Module):
    """A layer the ghost path does not know: a trainable elementwise scale."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.s = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.s


def _unknown_layer_factory():
    lm, tok = _hf_factory()
    lm.transformer.h[0].mlp.c_proj = torch.nn.Sequential(lm.transformer.h[0].mlp.c_proj, _Scale(24))
    return lm, tok


def _direct_use_factory():
    """lm_head's weight read outside lm_head's forward: its gradient bypasses the hooked layer."""
    lm, tok = _hf_factory()
    inner = lm.transformer.ln_f

    class Ln(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = inner

        def forward(self, x):
            return self.ln(x) + 0.01 * (x @ lm.lm_head.weight.t()).mean(-1, keepdim=True)

    lm.transformer.ln_f = Ln()
    return lm, tok


@pytest.mark.parametrize("factory", ["_unknown_layer_factory", "_direct_use_factory"])
def test_falls_back_to_vmap_and_train_step_stays_exact(tok_dir, factory):
    _HF["tok_dir"] = tok_dir
    cfg = ModelConfig(entry_point=f"{__name__}:{factory}", train_base=True)
    m = _f64(cfg)
    objective = get_objective("causal_lm")
    batch = objective.prepare(lm_batch(3), m.pad_id)
    acc = {k: torch.zeros_like(p) for k, p in m.trainable.items()}
    assert ghost_norms.clipped_sum(m.model, objective, batch, m.trainable, None, 1.0, acc) is None
    assert all(float(v.abs().max()) == 0 for v in acc.values())  # nothing written before refusing
    assert ghost_norms.fallback_reason(m.model, m.trainable, "causal_lm")
    _same_step_both_ways(tok_dir, cfg, "causal_lm", lm_batch(3))


def test_dirac_canary_takes_the_vmap_path(tok_dir):
    m = _f64(tiny_config(tok_dir))
    objective = get_objective("dirac_canary")
    batch = objective.prepare({"canary_index": torch.tensor([0, 5])}, m.pad_id)
    acc = {k: torch.zeros_like(p) for k, p in m.trainable.items()}
    assert ghost_norms.clipped_sum(m.model, objective, batch, m.trainable, None, 1.0, acc) is None
    _same_step_both_ways(tok_dir, tiny_config(tok_dir), "dirac_canary", {"canary_index": torch.tensor([0, 5])})


def _same_step_both_ways(tok_dir, cfg, loss, raw, micro=0, loss_params=None):
    """train_step with the default path and with m.per_example = "vmap": same seeded-noise update
    (SGD: Adam's first step would magnify the float32 rounding of the vmap path's norms)."""
    after, reports = [], []
    for method in ("auto", "vmap"):
        m = _f64(cfg, optimizer="sgd")
        m.per_example = method
        dp = DpConfig(True, 0.5, 0.05, 4.0, False, 7)
        reports.append(train_step(m, loss, raw, dp, micro, 1.0, loss_params))
        after.append({k: p.detach().clone() for k, p in m.trainable.items()})
    for k in after[0]:
        torch.testing.assert_close(after[0][k], after[1][k], rtol=1e-6, atol=1e-8, msg=k)
    assert reports[0].grad_norm_quantiles == pytest.approx(reports[1].grad_norm_quantiles, rel=1e-6)
    assert reports[0].fraction_clipped == reports[1].fraction_clipped
    assert reports[0].loss == pytest.approx(reports[1].loss, rel=1e-6)
    return reports


def test_train_step_uses_ghost_path_with_micro_batches(tok_dir, monkeypatch):
    calls = []
    real = ghost_norms.clipped_sum

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(ghost_norms, "clipped_sum", spy)
    cfg = tiny_config(tok_dir, lora_rank=0, train_base=True, value_head=True)
    reports = _same_step_both_ways(tok_dir, cfg, "ppo", ppo_batch(5), micro=2, loss_params=PPO)
    assert calls == [True, True, True]  # three micro-batches on the default path, none with "vmap"
    assert 0 < reports[0].fraction_clipped < 1


# -- mixed precision ------------------------------------------------------------------------------
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_bf16_autocast_matches_float32(tok_dir, device, full):
    """ModelSpec dtype "autocast_bfloat16": float32 weights, bf16 autocast forward and backward;
    the per-example norms and the clipped sum stay float32 and agree with float32 to bf16 precision."""
    kw = dict(lora_rank=0, train_base=True) if full else {}
    cfg = dataclasses.replace(tiny_config(tok_dir, value_head=True, **kw), device=device)
    ref, amp = _f64(cfg, dtype="float32"), _f64(cfg, dtype="autocast_bfloat16")
    assert amp.autocast == torch.bfloat16 and all(p.dtype == torch.float32 for p in amp.trainable.values())
    # causal_lm: smooth in the logits (PPO's clipping can switch branches under bf16 rounding)
    objective = get_objective("causal_lm")
    batch = {k: v.to(device) for k, v in objective.prepare(lm_batch(6, seed=4), ref.pad_id).items()}
    n32, acc32, _ = _ghost(ref, objective, batch, None, 1e9)
    c = float(n32.median())
    n32, acc32, _ = _ghost(ref, objective, batch, None, c)
    acc16 = {k: torch.zeros_like(p) for k, p in amp.trainable.items()}
    losses, n16, _ = ghost_norms.clipped_sum(amp.model, objective, batch, amp.trainable, None, c, acc16,
                                               torch.bfloat16)
    assert n16.dtype == torch.float32 and all(v.dtype == torch.float32 for v in acc16.values())
    torch.testing.assert_close(n16, n32, rtol=2e-2, atol=1e-6)
    flat32 = torch.cat([v.flatten() for v in acc32.values()])
    flat16 = torch.cat([v.flatten() for v in acc16.values()])
    assert float((flat16 - flat32).norm() / flat32.norm()) < 2e-2
    # the whole step: float32 weights after a DP-AdamW step with float32 noise
    dp = DpConfig(True, 0.0, c, 6.0, False, 3)
    before = {k: p.detach().clone() for k, p in amp.trainable.items()}
    r = train_step(amp, "causal_lm", lm_batch(6, seed=4), dp, 0, 1e-3)
    assert r.dp and all(p.dtype == torch.float32 for p in amp.trainable.values())
    assert any(not torch.equal(before[k], p) for k, p in amp.trainable.items())


def test_first_step_check_refuses_norms_that_differ_from_vmap(tok_dir, monkeypatch):
    """The safety net behind the static checks: if the hooked norms ever disagreed with torch.func
    on a model, the first step would see it and every step of that model and loss would use vmap."""
    m = _f64(tiny_config(tok_dir, lora_rank=0, train_base=True))
    real = ghost_norms._Param.sq_norms
    monkeypatch.setattr(ghost_norms._Param, "sq_norms", lambda self, b, dtype: 1.5 * real(self, b, dtype))
    objective = get_objective("causal_lm")
    batch = objective.prepare(lm_batch(3), m.pad_id)
    acc = {k: torch.zeros_like(p) for k, p in m.trainable.items()}
    assert ghost_norms.clipped_sum(m.model, objective, batch, m.trainable, None, 1.0, acc) is None
    assert "differ" in ghost_norms.fallback_reason(m.model, m.trainable, "causal_lm")
    monkeypatch.setattr(ghost_norms._Param, "sq_norms", real)
    assert ghost_norms.clipped_sum(m.model, objective, batch, m.trainable, None, 1.0, acc) is None  # remembered
