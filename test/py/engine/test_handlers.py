"""The protobuf handlers, called directly with worker.proto messages (no server)."""
from __future__ import annotations

import pytest
import torch
from conftest import CORPUS, lm_batch, ppo_batch, tiny_spec

from dpalign_worker.errors import WorkerError
from dpalign_worker.handlers import engine as h
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.tensors import batch_from_proto, batch_to_proto


def load(ctx, tok_dir, handle="policy", optimizer=True, **kw):
    req = pb.LoadModelRequest(handle=handle, spec=tiny_spec(tok_dir, **kw))
    if optimizer:
        req.optimizer.CopyFrom(pb.OptimizerSpec(name="adamw", lr=1e-3))
    return h.load_model(req, ctx)


def test_tokenizer_and_model_lifecycle(ctx, tmp_path):
    rep = h.train_tokenizer(pb.TrainTokenizerRequest(texts=CORPUS, vocab_size=320, out_dir=str(tmp_path)), ctx)
    assert rep.dir == str(tmp_path) and 260 <= rep.vocab_size <= 320
    info = load(ctx, str(tmp_path), value_head=True)
    assert info.handle == "policy" and info.vocab_size == rep.vocab_size and info.max_positions == 64
    assert info.eos_token_id != info.pad_token_id and info.backend == "builtin"
    assert 0 < info.trainable_parameters < info.total_parameters
    assert all(".lora_" in n or n.startswith("value_head") for n in info.trainable_names)

    tb = h.tokenize(pb.TokenizeRequest(handle="policy", texts=["the movie was great", "bad"], append_eos=True), ctx)
    t = batch_from_proto(tb)
    assert t["input_ids"].dtype == torch.int64 and t["lengths"].dtype == torch.int64
    assert int(t["input_ids"][1, t["lengths"][1] - 1]) == info.eos_token_id
    assert int(t["input_ids"][1, -1]) in (info.pad_token_id, info.eos_token_id)
    dec = h.decode(pb.DecodeRequest(handle="policy", batch=tb), ctx)
    assert list(dec.texts) == ["the movie was great", "bad"]
    cut = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle="policy", texts=CORPUS[:2], max_tokens=4,
                                                         append_eos=True), ctx))
    assert cut["input_ids"].shape == (2, 4) and (cut["input_ids"][:, 3] == info.eos_token_id).all()
    empty = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle="policy", texts=[]), ctx))
    assert empty["input_ids"].shape[0] == 0

    h.unload_model(pb.UnloadModelRequest(handle="policy"), ctx)
    with pytest.raises(WorkerError) as e:
        h.unload_model(pb.UnloadModelRequest(handle="policy"), ctx)
    assert e.value.code == pb.NOT_FOUND


def test_train_generate_score_checkpoint(ctx, tok_dir, tmp_path):
    load(ctx, tok_dir, value_head=True)
    req = pb.TrainStepRequest(
        handle="policy", loss="ppo", batch=batch_to_proto(ppo_batch(4)), micro_batch_size=2, lr=1e-3,
        dp=pb.DpSpec(enabled=True, noise_multiplier=1.1, max_grad_norm=0.5, expected_batch_size=4.0,
                     secure_noise=True),
        ppo=pb.PpoParams(clip_range=0.2, clip_range_value=0.2, vf_coef=0.1),
    )
    r = h.train_step(req, ctx)
    assert r.step == 1 and r.examples == 4 and r.dp and r.noise_mode == pb.secure
    assert len(r.grad_norm_quantiles) == 5 and list(r.grad_norm_quantiles) == sorted(r.grad_norm_quantiles)
    assert r.noise_std == pytest.approx(0.55) and r.max_grad_norm == 0.5 and r.noise_multiplier == 1.1
    assert 0 <= r.fraction_clipped <= 1 and {"policy_loss", "value_loss", "clipfrac", "approx_kl"} <= set(r.metrics)
    empty = h.train_step(pb.TrainStepRequest(handle="policy", loss="causal_lm", lr=1e-3,
                                             batch=batch_to_proto(lm_batch(0)),
                                             dp=pb.DpSpec(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0,
                                                          expected_batch_size=3.0, noise_seed=4)), ctx)
    assert empty.examples == 0 and empty.step == 2 and empty.noise_mode == pb.seeded and empty.noise_seed == 4

    b = lm_batch(2, width=6)
    g = h.generate(pb.GenerateRequest(handle="policy", max_new_tokens=4, temperature=1.0, seed=1,
                                      return_logprobs=True, return_values=True,
                                      prompts=batch_to_proto({"input_ids": b["input_ids"], "lengths": b["lengths"]})), ctx)
    gb = batch_from_proto(g.batch)
    assert gb["response_ids"].shape == (2, 4) and gb["logprobs"].dtype == torch.float32 and len(g.texts) == 2
    s = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(
        handle="policy", logprobs=True, values=True, batch=batch_to_proto({
            "query_ids": b["input_ids"], "query_lengths": b["lengths"], "response_ids": gb["response_ids"],
            "response_lengths": gb["response_lengths"]})), ctx))
    torch.testing.assert_close(s["logprobs"], gb["logprobs"], atol=1e-4, rtol=1e-4)

    info = h.save_checkpoint(pb.SaveCheckpointRequest(handle="policy", dir=str(tmp_path / "c"),
                                                      metadata={"k": "v"}), ctx)
    assert info.step == 2 and "manifest.json" in info.files and info.metadata["k"] == "v"
    load(ctx, tok_dir, handle="other", value_head=True)
    info2 = h.load_checkpoint(pb.LoadCheckpointRequest(handle="other", dir=str(tmp_path / "c")), ctx)
    assert info2.step == 2
    for (n, p), (_, q) in zip(ctx.models["policy"].model.named_parameters(),
                              ctx.models["other"].model.named_parameters()):
        assert torch.equal(p, q), n


def test_reward_model_and_errors(ctx, tok_dir):
    load(ctx, tok_dir, handle="rm", reward_head=True)
    b = lm_batch(3)
    rw = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(
        handle="rm", rewards=True, batch=batch_to_proto({"input_ids": b["input_ids"], "lengths": b["lengths"]})), ctx))
    assert rw["rewards"].shape == (3,)
    with pytest.raises(WorkerError) as e:
        h.score_sequences(pb.ScoreSequencesRequest(handle="rm", values=True, batch=batch_to_proto(b)), ctx)
    assert e.value.code == pb.INVALID_ARGUMENT
    with pytest.raises(WorkerError) as e:
        h.train_step(pb.TrainStepRequest(handle="nope", loss="causal_lm"), ctx)
    assert e.value.code == pb.NOT_FOUND
    with pytest.raises(WorkerError) as e:
        h.train_step(pb.TrainStepRequest(handle="rm", loss="ppo", batch=batch_to_proto(ppo_batch(2)),
                                         ppo=pb.PpoParams(clip_range=0.2)), ctx)
    assert "PpoParams needs every field" in e.value.message and "vf_coef" in e.value.message
    with pytest.raises(WorkerError) as e:
        h.train_step(pb.TrainStepRequest(handle="rm", batch=batch_to_proto(ppo_batch(2))), ctx)
    assert e.value.code == pb.INVALID_ARGUMENT and "loss is not set" in e.value.message
    with pytest.raises(WorkerError) as e:
        h.train_step(pb.TrainStepRequest(handle="rm", loss="ppo", batch=batch_to_proto(ppo_batch(2)), lr=1e-3,
                                         dp=pb.DpSpec(enabled=False)), ctx)
    assert "needs its parameters" in e.value.message
    with pytest.raises(WorkerError) as e:
        h.load_model(pb.LoadModelRequest(handle="x", spec=tiny_spec(tok_dir, targets=("nothing",))), ctx)
    assert "c_attn" in e.value.details["candidates"]
    from dpalign_worker.engine.opacus_backend import available

    if available():  # installed (the test environment does where ../shared/wheels holds it)
        info = h.load_model(pb.LoadModelRequest(handle="x", spec=tiny_spec(tok_dir), backend="opacus"), ctx)
        assert info.backend == "opacus"
    else:
        with pytest.raises(WorkerError) as e:
            h.load_model(pb.LoadModelRequest(handle="x", spec=tiny_spec(tok_dir), backend="opacus"), ctx)
        assert e.value.code == pb.UNSUPPORTED_MODEL and "pip install opacus" in e.value.message


def test_empty_tensor_batch_is_a_noise_only_step(ctx, tok_dir):
    load(ctx, tok_dir)
    r = h.train_step(pb.TrainStepRequest(handle="policy", loss="causal_lm", lr=1e-3, dp=pb.DpSpec(
        enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=2.0, secure_noise=True)), ctx)
    assert r.examples == 0 and r.step == 1 and r.noise_mode == pb.secure and list(r.grad_norm_quantiles) == [0.0] * 5
    # a loss that needs a head the model lacks is an INVALID_ARGUMENT, also from inside vmap
    with pytest.raises(WorkerError) as e:
        h.train_step(pb.TrainStepRequest(handle="policy", loss="ppo", batch=batch_to_proto(ppo_batch(2)),
                                         ppo=pb.PpoParams(clip_range=0.2, clip_range_value=0.2, vf_coef=0.1),
                                         dp=pb.DpSpec(enabled=True, max_grad_norm=1.0, expected_batch_size=2.0)), ctx)
    assert e.value.code == pb.INVALID_ARGUMENT and "value head" in e.value.message
