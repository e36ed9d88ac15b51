"""Model sources (local Hugging Face directory), LoRA dropout under vmap, sampling filters."""
from __future__ import annotations

import torch
from conftest import lm_batch, make_model, tiny_config

from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.engine.generation import _filter
from dpalign_worker.engine.lora import LoraConfig
from dpalign_worker.engine.models import ModelConfig, build_model
from dpalign_worker.engine.optim import OptimizerConfig


def test_local_hf_directory(tok_dir, tmp_path):
    src = make_model(tok_dir, optimizer=None, lora_rank=0)
    src.model.lm.save_pretrained(tmp_path)
    src.tokenizer.save_pretrained(tmp_path)
    spec = ModelConfig(hf_path=str(tmp_path), lora=LoraConfig(rank=2, alpha=4, target_modules=("c_attn",)),
                       value_head=True)
    m = build_model("hf", spec, "cpu", OptimizerConfig("sgd", lr=0.1))
    ids = lm_batch(2)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(m.model(ids)["logits"], src.model(ids)["logits"], atol=1e-5, rtol=1e-5)
    r = train_step(m, "causal_lm", lm_batch(3), DpConfig(True, 1.0, 1.0, 3.0, True))
    assert r.examples == 3 and m.pad_id == src.pad_id


def test_lora_dropout_runs_under_vmap(tok_dir):
    spec = tiny_config(tok_dir, lora_dropout=0.1)
    m = build_model("d", spec, "cpu", OptimizerConfig("adamw", lr=1e-2))
    r = train_step(m, "causal_lm", lm_batch(4), DpConfig(True, 1.0, 1.0, 4.0, False, 1), micro_batch_size=2)
    assert r.examples == 4 and r.grad_norm_quantiles[-1] > 0


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(_filter(logits, 2, 0.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(_filter(logits, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(_filter(logits, 0, 0.9)).tolist() == [[False, False, False, True]]
    assert not torch.isinf(_filter(logits, 0, 1.0)).any()


class _PlainLM(torch.nn.Module):
    """Not a transformers model: forward(input_ids) -> logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 16)
        self.mix = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, vocab)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        h = h + torch.tanh(self.mix(h.cumsum(1) / torch.arange(1, h.shape[1] + 1).view(1, -1, 1)))
        return self.out(h)


def _plain_factory():
    from dpalign_worker.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(_plain_factory.tok_dir)
    return _PlainLM(len(tok)), tok


def test_plain_module_entry_point(tok_dir):
    import sys
    import types

    from test_per_example import one_at_a_time

    from dpalign_worker.engine.objectives import get_objective
    from dpalign_worker.engine.per_example import per_example_grads

    _plain_factory.tok_dir = tok_dir
    sys.modules["dpalign_test_plain"] = types.SimpleNamespace(factory=_plain_factory)
    spec = ModelConfig(entry_point="dpalign_test_plain:factory",
                       lora=LoraConfig(rank=2, alpha=2, target_modules=("mix",)))
    m = build_model("p", spec, "cpu", OptimizerConfig("sgd", lr=0.1))
    assert sorted(m.trainable) == ["lm.mix.lora_A", "lm.mix.lora_B"]
    with torch.no_grad():
        m.trainable["lm.mix.lora_B"].normal_()
    obj = get_objective("causal_lm")
    batch = obj.prepare(lm_batch(3), m.pad_id)
    grads, _, _ = per_example_grads(m.model, obj, batch, m.trainable, None)
    ref = one_at_a_time(m, obj, batch, {})
    for n in grads:
        torch.testing.assert_close(grads[n], ref[n], atol=1e-5, rtol=1e-5)
