"""Checkpoints: exact resume, pretrain -> SFT (LoRA) -> PPO (LoRA + value head) / reference, and
integrity (SHA-256 per file, the manifest's own hash, old formats refused)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import PPO, lm_batch, make_model, ppo_batch

from dpalign_worker.engine import checkpoint
from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.errors import CheckpointError, WorkerError
from dpalign_worker.protocol import worker_pb2 as pb

DP = DpConfig(True, 0.7, 0.5, 4.0, False, 123)


def steps(m, seeds):
    for s in seeds:
        train_step(m, "ppo", ppo_batch(4, seed=s), DP, 2, lr=1e-2, loss_params=PPO)


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


# -- integrity (issue 14) ------------------------------------------------------------------------
@pytest.fixture
def saved(tok_dir, tmp_path):
    """A model and its checkpoint directory (weights, optimizer state, manifest with hashes)."""
    m = make_model(tok_dir, value_head=True)
    steps(m, [0])
    ck = tmp_path / "ck"
    checkpoint.save(m, str(ck), {"stage": "ppo"})
    return m, ck


def fresh(tok_dir):
    return make_model(tok_dir, value_head=True, seed=5)


def test_manifest_records_sha256_and_size_of_each_file(saved):
    import hashlib

    _, ck = saved
    man = json.loads((ck / "manifest.json").read_text())
    assert man["format"] == "dpalign-checkpoint/2"
    assert set(man["integrity"]) == {"weights.safetensors", "optimizer.safetensors"}
    for name, rec in man["integrity"].items():
        data = (ck / name).read_bytes()
        assert rec == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert len(man["manifest_sha256"]) == 64


def overwrite(path, offset, n=64, seed=0):
    import random

    data = bytearray(path.read_bytes())
    junk = random.Random(seed).randbytes(n)
    data[offset:offset + n] = junk if junk != bytes(data[offset:offset + n]) else bytes(b ^ 1 for b in junk)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["header", "middle", "end"])
def test_corrupted_weights_fail_with_the_file_and_the_fix(tok_dir, saved, where):
    _, ck = saved
    w = ck / "weights.safetensors"
    size = w.stat().st_size
    overwrite(w, {"header": 8, "middle": size // 2, "end": size - 64}[where])
    for load in (lambda: checkpoint.restore(fresh(tok_dir), str(ck)),
                 lambda: make_model(tok_dir, init_checkpoint=str(ck))):
        with pytest.raises(CheckpointError) as e:
            load()
        msg = e.value.message
        assert f"{ck}/weights.safetensors" in msg and "SHA-256 mismatch" in msg and "rerun" in msg
        assert e.value.code == pb.INVALID_ARGUMENT and e.value.details["reason"] == "checkpoint_integrity"


def test_corrupted_optimizer_state_fails_on_resume(tok_dir, saved):
    _, ck = saved
    overwrite(ck / "optimizer.safetensors", 200)
    with pytest.raises(CheckpointError, match="optimizer.safetensors: SHA-256 mismatch"):
        checkpoint.restore(fresh(tok_dir), str(ck))


def test_truncated_file_fails(tok_dir, saved):
    _, ck = saved
    w = ck / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: \d+ bytes where the manifest records \d+ \(truncated\).*rerun"):
        checkpoint.restore(fresh(tok_dir), str(ck))


def test_missing_file_fails(tok_dir, saved):
    _, ck = saved
    (ck / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors: missing; restore it") as e:
        checkpoint.restore(fresh(tok_dir), str(ck))
    assert e.value.code == pb.NOT_FOUND


@pytest.mark.parametrize("edit", ["step", "hash", "drop_hash", "reformat"])
def test_tampered_manifest_fails(tok_dir, saved, edit):
    _, ck = saved
    path = ck / "manifest.json"
    man = json.loads(path.read_text())
    if edit == "step":
        man["step"] = 100  # would silently shift the seeded noise stream and the resume point
    elif edit == "hash":
        man["integrity"]["weights.safetensors"]["sha256"] = "0" * 64
    elif edit == "drop_hash":
        del man["manifest_sha256"]
    else:  # whitespace and key order do not matter: the hash covers content
        path.write_text(json.dumps(man, indent=None, sort_keys=False))
        checkpoint.restore(fresh(tok_dir), str(ck))
        return
    path.write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match=r"manifest\.json: SHA-256 mismatch \(the manifest was edited"):
        checkpoint.restore(fresh(tok_dir), str(ck))


def test_manifest_cannot_point_outside_the_directory(tok_dir, saved):
    _, ck = saved
    path = ck / "manifest.json"
    man = json.loads(path.read_text())
    man["integrity"]["../outside.safetensors"] = man["integrity"].pop("weights.safetensors")
    man["manifest_sha256"] = checkpoint._manifest_digest(man)  # a consistent, but wrong, manifest
    path.write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="integrity record does not list"):
        checkpoint.restore(fresh(tok_dir), str(ck))


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\xff\xfe"])
def test_unreadable_manifest_fails(tok_dir, saved, content):
    _, ck = saved
    (ck / "manifest.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(CheckpointError, match=r"manifest\.json: (unreadable|not a JSON object).*rerun the stage"):
        checkpoint.restore(fresh(tok_dir), str(ck))


def test_missing_manifest_fails(tok_dir, saved):
    _, ck = saved
    (ck / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint at .*manifest.json missing.*rerun") as e:
        checkpoint.restore(fresh(tok_dir), str(ck))
    assert e.value.code == pb.NOT_FOUND


def test_old_manifest_without_hashes_is_refused(tok_dir, saved):
    _, ck = saved
    path = ck / "manifest.json"
    man = json.loads(path.read_text())
    man["format"] = "dpalign-checkpoint/1"
    del man["integrity"], man["manifest_sha256"]
    path.write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="format dpalign-checkpoint/1 has no SHA-256.*delete this checkpoint"):
        checkpoint.restore(fresh(tok_dir), str(ck))
