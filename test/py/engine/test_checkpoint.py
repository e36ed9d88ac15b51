"""Checkpoints: exact resume, and pretrain -> SFT (LoRA) -> PPO (LoRA + value head) / reference."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import lm_batch, make_model, ppo_batch

from dpalign_worker.engine import checkpoint
from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.errors import WorkerError

DP = DpConfig(True, 0.7, 0.5, 4.0, False, 123)


def steps(m, seeds):
    for s in seeds:
        train_step(m, "ppo", ppo_batch(4, seed=s), DP, 2, lr=1e-2)


def test_resume_equals_uninterrupted_run(tok_dir, tmp_path):
    a = make_model(tok_dir, value_head=True)
    steps(a, [0, 1, 2])
    b = make_model(tok_dir, value_head=True)
    steps(b, [0])
    checkpoint.save(b, str(tmp_path / "ck"), {"stage": "ppo"})
    c = make_model(tok_dir, value_head=True, seed=99)  # different fresh init: everything must come from disk
    man = checkpoint.restore(c, str(tmp_path / "ck"))
    assert man["step"] == 1 and man["metadata"] == {"stage": "ppo"}
    steps(c, [1, 2])
    assert c.step == a.step == 3
    for n, p in a.model.named_parameters():
        assert torch.equal(p, dict(c.model.named_parameters())[n]), n
    files = sorted(os.listdir(tmp_path / "ck"))
    assert files == ["manifest.json", "optimizer.safetensors", "weights.safetensors"]


def logits(m, ids):
    with torch.no_grad():
        return m.model(ids, want="logits")["logits"]


def test_pretrain_sft_ppo_chain(tok_dir, tmp_path):
    ids = lm_batch(3, seed=8)["input_ids"]
    pre = make_model(tok_dir, lora_rank=0, train_base=True)
    train_step(pre, "causal_lm", lm_batch(4), DpConfig(False), lr=1e-2)
    checkpoint.save(pre, str(tmp_path / "pre"))

    sft = make_model(tok_dir, init_checkpoint=str(tmp_path / "pre"))
    torch.testing.assert_close(logits(sft, ids), logits(pre, ids))  # fresh LoRA is the identity
    base = {n: p.clone() for n, p in sft.model.named_parameters() if n not in sft.trainable}
    for s in range(2):
        train_step(sft, "causal_lm", lm_batch(4, seed=s), DpConfig(True, 0.5, 1.0, 4.0, True), lr=5e-2)
    assert all(torch.equal(p, base[n]) for n, p in sft.model.named_parameters() if n in base)
    checkpoint.save(sft, str(tmp_path / "sft"))
    man = json.load(open(tmp_path / "sft" / "manifest.json"))
    assert man["includes_base"] and man["lora"]["rank"] == 4

    policy = make_model(tok_dir, value_head=True, init_checkpoint=str(tmp_path / "sft"), seed=3)
    ref = make_model(tok_dir, optimizer=None, lora_rank=0, init_checkpoint=str(tmp_path / "sft"))
    torch.testing.assert_close(logits(policy, ids), logits(sft, ids), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(ref, ids), logits(sft, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(sft, ids), logits(pre, ids))
    assert all(".lora_" in n or n.startswith("value_head") for n in policy.trainable)
    assert not ref.trainable


def test_bad_checkpoints(tok_dir, tmp_path):
    m = make_model(tok_dir)
    with pytest.raises(WorkerError, match="no checkpoint"):
        checkpoint.restore(m, str(tmp_path / "missing"))
    other = make_model(tok_dir, value_head=True)
    checkpoint.save(m, str(tmp_path / "ck"))
    with pytest.raises(WorkerError, match="lacks trainable"):
        checkpoint.restore(other, str(tmp_path / "ck"))


def test_reward_model_reloads_for_scoring(tok_dir, tmp_path):
    from conftest import cls_batch

    from dpalign_worker.engine.generation import score

    rm = make_model(tok_dir, reward_head=True)
    for s in range(2):
        train_step(rm, "classification", cls_batch(4, seed=s), DpConfig(True, 0.5, 1.0, 4.0, True), lr=5e-2)
    checkpoint.save(rm, str(tmp_path / "rm"))
    frozen = make_model(tok_dir, optimizer=None, lora_rank=0, reward_head=True, seed=7,
                        init_checkpoint=str(tmp_path / "rm"))
    b = lm_batch(3, seed=1)
    batch = {"input_ids": b["input_ids"], "lengths": b["lengths"]}
    torch.testing.assert_close(score(frozen, batch, False, False, True)["rewards"],
                               score(rm, batch, False, False, True)["rewards"], atol=1e-5, rtol=1e-5)
