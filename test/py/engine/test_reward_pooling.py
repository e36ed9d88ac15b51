"""Reward pooling (ModelSpec reward_pooling, config rm.pooling): "mean" reads a sequence's reward as
the mean of the reward head over its real tokens; training, scoring, the ghost-norm path and
checkpoints all agree on it, and a checkpoint is never read with the other pooling."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import cls_batch, lm_batch, pair_batch, perturb_lora, tiny_config, tiny_spec
from test_ghost_norms import _check_equal, _f64

from dpalign_worker.engine import checkpoint
from dpalign_worker.engine.generation import score
from dpalign_worker.engine.models import build_model
from dpalign_worker.engine.optim import OptimizerConfig
from dpalign_worker.errors import WorkerError
from dpalign_worker.handlers import engine as h
from dpalign_worker.protocol import worker_pb2 as pb


def _rm(tok_dir, pooling, **kw):
    cfg = dataclasses.replace(tiny_config(tok_dir, reward_head=True, **kw), reward_pooling=pooling)
    m = build_model("rm", cfg, "cpu", OptimizerConfig("adamw", lr=1e-3))
    perturb_lora(m)
    return m


def test_mean_pooling_scores_the_mean_of_the_head_over_real_tokens(tok_dir):
    m = _rm(tok_dir, "mean")
    b = lm_batch(4, seed=2)
    got = score(m, {"input_ids": b["input_ids"], "lengths": b["lengths"]}, False, False, True)["rewards"]
    with torch.no_grad():
        for i, n in enumerate(b["lengths"].tolist()):
            ids = b["input_ids"][i: i + 1, :n]  # the example alone, without its padding
            body = m.model.lm.base_model(input_ids=ids, use_cache=False).last_hidden_state
            expected = m.model.reward_head(body).mean()
            torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6)
    # "last" (the default) reads the head at the last real token: a different number
    last = _rm(tok_dir, "last")
    last.model.load_state_dict(m.model.state_dict())
    other = score(last, {"input_ids": b["input_ids"], "lengths": b["lengths"]}, False, False, True)["rewards"]
    assert not torch.allclose(got, other)


@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_ghost_norms_equal_vmap_under_mean_pooling(tok_dir, full):
    kw = dict(lora_rank=0, train_base=True) if full else {}
    cfg = dataclasses.replace(tiny_config(tok_dir, reward_head=True, **kw), reward_pooling="mean")
    _check_equal(_f64(cfg), "pairwise_reward", pair_batch)
    _check_equal(_f64(cfg), "classification", cls_batch)


def test_unknown_pooling_is_refused(tok_dir):
    with pytest.raises(WorkerError, match="unknown reward pooling 'max'"):
        _rm(tok_dir, "max")


def test_checkpoint_keeps_its_pooling(ctx, tok_dir, tmp_path):
    spec = tiny_spec(tok_dir, reward_head=True)
    spec.reward_pooling = pb.mean
    h.load_model(pb.LoadModelRequest(handle="rm", spec=spec, optimizer=pb.OptimizerSpec(name="adamw", lr=1e-3)), ctx)
    assert ctx.models["rm"].model.reward_pooling == "mean"
    out = str(tmp_path / "rm")
    manifest = checkpoint.save(ctx.models["rm"], out)
    assert manifest["reward_pooling"] == "mean"
    # served with the same pooling: fine; with the default (last): one clear refusal naming the fix
    same = tiny_spec(tok_dir, reward_head=True, init_checkpoint=out)
    same.reward_pooling = pb.mean
    h.load_model(pb.LoadModelRequest(handle="serve", spec=same), ctx)
    with pytest.raises(WorkerError) as e:
        h.load_model(pb.LoadModelRequest(handle="wrong", spec=tiny_spec(tok_dir, reward_head=True, init_checkpoint=out)), ctx)
    assert e.value.code == pb.INVALID_ARGUMENT and "rm.pooling to 'mean'" in e.value.message
    # a policy built from the reward model's checkpoint has no reward head: pooling does not apply
    h.load_model(pb.LoadModelRequest(handle="policy", spec=tiny_spec(tok_dir, init_checkpoint=out)), ctx)
