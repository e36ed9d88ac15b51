"""`dpalign export`: a dpalign LoRA checkpoint (pretrain -> DP-SFT -> DP-PPO, tiny GPT-2, LoRA on
`c_attn` and on `c_attn[q,v]`) written as a peft adapter that peft loads on the exported base, and
as a merged save_pretrained model; both reproduce dpalign's logits."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import PPO, lm_batch, make_model, ppo_batch

from dpalign_worker import export as ex
from dpalign_worker.engine import checkpoint
from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.errors import WorkerError

DP = DpConfig(True, 0.5, 1.0, 4.0, True)


def _chain(tok_dir, root, targets):
    """pretrain (full) -> SFT (LoRA, DP) -> PPO (LoRA + value head, DP), checkpoints as the pipeline writes them."""
    pre = make_model(tok_dir, lora_rank=0, train_base=True)
    train_step(pre, "causal_lm", lm_batch(4), DpConfig(False), lr=1e-2)
    checkpoint.save(pre, str(root / "pre"))
    sft = make_model(tok_dir, init_checkpoint=str(root / "pre"), targets=targets)
    for s in range(2):
        train_step(sft, "causal_lm", lm_batch(4, seed=s), DP, lr=5e-2)
    checkpoint.save(sft, str(root / "sft"), {"stage": "sft"})
    policy = make_model(tok_dir, value_head=True, init_checkpoint=str(root / "sft"), targets=targets, seed=3)
    for s in range(2):
        train_step(policy, "ppo", ppo_batch(4, seed=s), DP, 2, lr=5e-2, loss_params=PPO)
    checkpoint.save(policy, str(root / "ppo"), {"stage": "ppo"})
    return sft, policy


def _logits(m, ids):
    with torch.no_grad():
        return m.model(ids, want="logits")["logits"]


@pytest.mark.parametrize("targets", [("c_attn",), ("c_attn[q,v]",)])
def test_peft_and_merged_reproduce_dpalign_logits(tok_dir, tmp_path, targets):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sft, policy = _chain(tok_dir, tmp_path, targets)
    ids = lm_batch(3, seed=11)["input_ids"][:, :10]
    for ckpt, m in (("sft", sft), ("ppo", policy)):
        want = _logits(m, ids)
        out = tmp_path / f"{ckpt}-peft"
        summary = ex.export(str(tmp_path / ckpt), "peft", str(out))
        assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == ["c_attn"]
        assert cfg["fan_in_fan_out"] is True and cfg["base_model_name_or_path"] == str(out / "base")
        # a fresh process's view: the exported base and the adapter directory, nothing of dpalign
        base = AutoModelForCausalLM.from_pretrained(str(out / "base"), local_files_only=True)
        got = PeftModel.from_pretrained(base, str(out)).eval()
        with torch.no_grad():
            torch.testing.assert_close(got(input_ids=ids).logits, want, atol=1e-5, rtol=0)
        assert summary["max_abs_logit_diff"] <= 1e-5
        # the adapter changes the function: the base alone does not match
        with torch.no_grad(), got.disable_adapter():
            assert not torch.allclose(got(input_ids=ids).logits, want, atol=1e-3)

        from safetensors.torch import load_file

        w = load_file(str(out / "adapter_model.safetensors"))
        b = [t for k, t in w.items() if k.endswith("c_attn.lora_B.weight")]
        assert b and all(t.shape == (96, 4) for t in b)  # full width: 3 x n_embd
        note = (out / "README.md").read_text()
        if targets == ("c_attn[q,v]",):
            assert all(torch.count_nonzero(t[32:64]) == 0 and torch.count_nonzero(t[:32]) > 0 for t in b)
            assert "key third" in note and "key third" in summary["fused_parts"]
        else:
            assert all(torch.count_nonzero(t[32:64]) > 0 for t in b)

        merged = tmp_path / f"{ckpt}-merged"
        ex.export(str(tmp_path / ckpt), "merged", str(merged))
        full = AutoModelForCausalLM.from_pretrained(str(merged), local_files_only=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(full(input_ids=ids).logits, want, atol=1e-5, rtol=0)
        assert os.path.isfile(merged / "model.safetensors") and os.path.isfile(merged / "tokenizer.json")
        meta = json.loads((merged / ex.EXPORT_META).read_text())
        assert meta["format"] == "merged" and meta["value_head_dropped"] == (ckpt == "ppo")


def test_refusals(tok_dir, tmp_path):
    with pytest.raises(WorkerError, match="no checkpoint"):
        ex.export(str(tmp_path / "missing"), "peft", str(tmp_path / "out"))
    full = make_model(tok_dir, lora_rank=0, train_base=True)
    checkpoint.save(full, str(tmp_path / "full"))
    with pytest.raises(WorkerError, match="no LoRA adapter.*--format merged"):
        ex.export(str(tmp_path / "full"), "peft", str(tmp_path / "out"))
    assert ex.main(["--checkpoint", str(tmp_path / "missing"), "--format", "merged", "--out", str(tmp_path / "o")]) == 2
