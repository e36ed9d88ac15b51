"""Cross-check against Opacus itself: on the same weights and batch, dpalign's sum of clipped
per-example gradients (torch.func per-example gradients -> dp_step.clip_per_example ->
dp_step.accumulate) equals Opacus's (GradSampleModule -> DPOptimizer.clip_and_accumulate ->
p.summed_grad), to float32 precision: rtol 1e-5, atol 1e-6.

The clip bound C is the median per-example norm, so half the examples are clipped. Opacus divides
by (norm + 1e-6) where dpalign divides by norm; with the clipped norms here (> C >= 0.1) that is a relative
difference below 1e-5, inside the tolerance.

Models: the built-in tiny GPT-2 with dpalign's LoRA (Opacus runs its torch.func fallback for
LoraLayer) and full fine-tuning; a GPT-2-architecture Hugging Face model built from a config (no
download) with dpalign's LoRA, with peft's LoRA (Opacus's own Linear hooks) and full fine-tuning
(tied wte/lm_head; Opacus sums both layers' per-sample gradients). Hugging Face's default position
ids are [1, L], broadcast over the batch, which Opacus's Embedding sampler would take as one sample;
the Opacus side passes them expanded to [B, L] (as the backend does).
"""
from __future__ import annotations

import pytest
import torch

from opacus_required import require_opacus_module

opacus = require_opacus_module()

from conftest import lm_batch, make_model, perturb_lora  # noqa: E402

from dpalign_worker.engine.dp_step import accumulate, clip_per_example  # noqa: E402
from dpalign_worker.engine.lora import LoraConfig, apply_lora  # noqa: E402
from dpalign_worker.engine.models import EngineModel  # noqa: E402
from dpalign_worker.engine.objectives import get_objective  # noqa: E402
from dpalign_worker.engine.per_example import per_example_grads  # noqa: E402
from dpalign_worker.engine import opacus_backend  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
# Opacus's hooks see token ids, which need no gradient; torch warns about that on each backward.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")
PAD = 1


def _hf_gpt2(vocab=512, seed=3):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
                     bos_token_id=0, eos_token_id=0, pad_token_id=PAD)
    torch.manual_seed(seed)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _engine(lm, mode: str, seed=0):
    """EngineModel around an HF LM: 'lora' (dpalign's), 'peft' (peft's), 'full'."""
    for p in lm.parameters():
        p.requires_grad_(mode == "full")
    if mode == "lora":
        apply_lora(lm, LoraConfig(4, 8.0, 0.0, ("c_attn",)), torch.Generator().manual_seed(seed))
    elif mode == "peft":
        from peft import LoraConfig as PeftLora, get_peft_model

        lm = get_peft_model(lm, PeftLora(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"],
                                         fan_in_fan_out=True))
    m = EngineModel(lm, 0, False, False)
    for n, p in m.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # LoRA B starts at zero; give it values so A's gradients are not zero
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    m.train()
    return m


def _dpalign_sum(model, batch, params, c):
    obj = get_objective("causal_lm")
    grads, _, _ = per_example_grads(model, obj, batch, params, None)
    factors, norms = clip_per_example(grads, c)
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    accumulate(acc, grads, factors)
    return acc, norms


def _opacus_sum(model, batch, params, c):
    """Opacus as a user runs it: GradSampleModule + DPOptimizer (no noise), one backward."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    try:
        opt = DPOptimizer(torch.optim.SGD(list(params.values()), lr=0.0), noise_multiplier=0.0, max_grad_norm=c,
                          expected_batch_size=batch["input_ids"].shape[0], loss_reduction="sum")
        opt.zero_grad(set_to_none=True)
        ids = batch["input_ids"]
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        fwd = lambda x, want="logits": gsm(x, want=want, position_ids=pos)  # noqa: E731
        losses, _ = get_objective("causal_lm").compute(fwd, batch, None)
        losses.sum().backward()
        opt.clip_and_accumulate()
        out = {n: p.summed_grad.detach().clone() for n, p in params.items()}
        opt.zero_grad(set_to_none=True)
    finally:
        gsm._close()
    return out


def _check(model, batch, params):
    _, norms = _dpalign_sum(model, batch, params, 1e9)
    c = float(norms.median())
    assert c >= 0.1, "clipped norms this small would make Opacus's +1e-6 matter"
    ours, norms = _dpalign_sum(model, batch, params, c)
    assert 0 < int((norms > c).sum()) < len(norms)  # some examples clipped, some not
    theirs = _opacus_sum(model, batch, params, c)
    assert set(ours) == set(theirs)
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], rtol=RTOL, atol=ATOL, msg=lambda m: f"{n}: {m}")


def _batch(n=6, vocab=290, seed=0):
    return get_objective("causal_lm").prepare(lm_batch(n, seed=seed, vocab=vocab), PAD)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_tiny_model_clipped_sum_equals_opacus(tok_dir, mode):
    m = make_model(tok_dir, lora_rank=4 if mode == "lora" else 0, train_base=mode == "full")
    perturb_lora(m)
    m.model.train()
    _check(m.model, _batch(), m.trainable)


@pytest.mark.parametrize("mode", ["lora", "peft", "full"])
def test_hf_gpt2_clipped_sum_equals_opacus(mode):
    m = _engine(_hf_gpt2(), mode)
    params = _trainable(m)
    if mode == "full":  # tied embeddings: one parameter, two layers
        assert m.lm.lm_head.weight is m.lm.transformer.wte.weight
    _check(m, _batch(vocab=512, seed=1), params)


@pytest.mark.parametrize("mode", ["lora", "peft", "full"])
def test_backend_per_example_grads_equal_builtin_on_hf_gpt2(mode):
    """The worker's opacus backend (engine/opacus_backend.py) on the HF model: each example's
    gradient equals the builtin torch.func one, also for the position embedding and tied weights."""
    m = _engine(_hf_gpt2(seed=5), mode, seed=2)
    params = _trainable(m)
    obj = get_objective("causal_lm")
    batch = _batch(5, vocab=512, seed=2)
    ref, ref_loss, _ = per_example_grads(m, obj, batch, params, None)
    got, got_loss, _ = opacus_backend.per_example_grads(m, obj, batch, params, None)
    torch.testing.assert_close(got_loss, ref_loss, rtol=RTOL, atol=ATOL)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=RTOL, atol=ATOL, msg=lambda msg: f"{n}: {msg}")
    # hooks are off between calls: a plain backward leaves no per-sample gradients behind
    losses, _ = obj.compute(lambda x, want="logits": m(x, want=want), batch, None)
    losses.sum().backward()
    assert all(getattr(p, "grad_sample", None) is None for p in params.values())
