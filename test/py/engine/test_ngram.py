"""The hashed n-gram classifier (engine/ngram.py) through the handlers: it loads as a reward with the
policy's tokenizer, trains with the classification loss, scores token rows as the mean n-gram weight,
saves and reloads as safetensors, and repetition cannot push its score past an n-gram's weight."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import CORPUS

from dpalign_worker.engine.ngram import NgramClassifier, NgramConfig, ngram_hashes
from dpalign_worker.errors import WorkerError
from dpalign_worker.handlers import engine as h
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.tensors import batch_from_proto, batch_to_proto

POS = ["a great and wonderful film", "i loved this beautiful story", "the acting was wonderful and great"]
NEG = ["a terrible and boring film", "the worst movie, truly awful", "bad acting and a dull plot"]


def spec(tok_dir, buckets=1 << 12, max_n=2, init_checkpoint=""):
    return pb.ModelSpec(ngram=pb.NgramModelSpec(buckets=buckets, max_n=max_n, tokenizer_dir=tok_dir),
                        init_checkpoint=init_checkpoint)


def rows(ctx, handle, texts):
    return h.tokenize(pb.TokenizeRequest(handle=handle, texts=texts), ctx)


def scores(ctx, handle, texts):
    rep = h.score_sequences(pb.ScoreSequencesRequest(handle=handle, batch=rows(ctx, handle, texts), rewards=True), ctx)
    return batch_from_proto(rep)["rewards"]


def train(ctx, handle, texts, labels, steps=40, lr=0.3):
    b = batch_from_proto(rows(ctx, handle, texts))
    b["labels"] = torch.tensor(labels)
    for _ in range(steps):
        rep = h.train_step(pb.TrainStepRequest(handle=handle, loss=pb.classification, batch=batch_to_proto(b),
                                               dp=pb.DpSpec(enabled=False, max_grad_norm=0), lr=lr), ctx)
    return rep


def test_hashes_are_per_order_and_masked_before_enough_tokens():
    ids = torch.tensor([[5, 7, 5, 7]])
    idx, valid = ngram_hashes(ids, 3, 1 << 20)
    assert idx.shape == (1, 4, 3)
    assert valid[0].tolist() == [[True, False, False], [True, True, False], [True, True, True], [True, True, True]]
    assert idx[0, 0, 0] == idx[0, 2, 0] and idx[0, 1, 1] == idx[0, 3, 1]   # same unigram, same bigram
    assert idx[0, 1, 0] != idx[0, 1, 1]                                      # "7" vs "5 7"
    assert idx[0, 1, 1] != idx[0, 2, 1]                                      # "5 7" vs "7 5"


def test_score_is_mean_ngram_weight_plus_bias_at_every_prefix():
    m = NgramClassifier(NgramConfig(buckets=64, max_n=2))
    with torch.no_grad():
        m.reward_head.weight.copy_(torch.randn(64))
        m.reward_head.bias.fill_(0.25)
    ids = torch.tensor([[3, 9, 4, 1, 1]])
    with torch.no_grad():
        r = m(ids)["rewards"][0]
    idx, valid = ngram_hashes(ids, 2, 64)
    w = m.reward_head.weight
    for t in range(3):
        used = [int(idx[0, s, n]) for s in range(t + 1) for n in range(2) if valid[0, s, n]]
        assert float(r[t]) == pytest.approx(float(w[used].mean() + 0.25), abs=1e-6)
    # repeating a text leaves its score within the range of its n-gram weights
    with torch.no_grad():
        rep = m(torch.tensor([[3, 3, 3, 3, 3, 3, 3, 3]]))["rewards"][0, -1]
    lo, hi = float(w.min()) + 0.25, float(w.max()) + 0.25
    assert lo <= float(rep) <= hi


def test_loads_trains_scores_and_round_trips_through_a_checkpoint(ctx, tok_dir, tmp_path):
    opt = pb.OptimizerSpec(name=pb.adamw, lr=0.3)
    info = h.load_model(pb.LoadModelRequest(handle="ng", spec=spec(tok_dir), optimizer=opt), ctx)
    assert info.trainable_parameters == info.total_parameters == (1 << 12) + 1
    assert set(info.trainable_names) == {"reward_head.weight", "reward_head.bias"}
    # the policy's tokenizer: tokenize/decode on this handle are the policy's
    dec = h.decode(pb.DecodeRequest(handle="ng", batch=rows(ctx, "ng", ["the movie was great"])), ctx)
    assert list(dec.texts) == ["the movie was great"]
    assert torch.equal(scores(ctx, "ng", POS + NEG), torch.zeros(6))    # zero weights before training
    rep = train(ctx, "ng", POS + NEG, [1, 1, 1, 0, 0, 0])
    assert rep.loss < 0.2 and rep.metrics["accuracy"] == 1.0
    s = scores(ctx, "ng", ["great and wonderful", "boring and awful", "wonderful", "terrible"])
    assert s[0] > 0 > s[1] and s[2] > 0 > s[3]
    h.save_checkpoint(pb.SaveCheckpointRequest(handle="ng", dir=str(tmp_path / "ck")), ctx)
    assert "weights.safetensors" in os.listdir(tmp_path / "ck")
    h.load_model(pb.LoadModelRequest(handle="ng2", spec=spec(tok_dir, init_checkpoint=str(tmp_path / "ck"))), ctx)
    assert torch.allclose(scores(ctx, "ng2", POS + NEG), scores(ctx, "ng", POS + NEG))
    # rows with and without trailing padding score alike (the score is taken at each row's last token)
    b = batch_from_proto(rows(ctx, "ng", ["great and wonderful"]))
    wide = {"input_ids": torch.nn.functional.pad(b["input_ids"], (0, 5), value=info.pad_token_id), "lengths": b["lengths"]}
    again = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="ng", batch=batch_to_proto(wide), rewards=True), ctx))
    assert float(again["rewards"][0]) == pytest.approx(float(s[0]), abs=1e-6)


def test_refuses_what_it_cannot_do(ctx, tok_dir):
    with pytest.raises(WorkerError, match="ngram max_n"):
        h.load_model(pb.LoadModelRequest(handle="x", spec=spec(tok_dir, max_n=9)), ctx)
    bad = spec(tok_dir)
    bad.lora.CopyFrom(pb.LoraSpec(rank=4, alpha=8, target_modules=["c_attn"]))
    with pytest.raises(WorkerError, match="takes no LoRA"):
        h.load_model(pb.LoadModelRequest(handle="x", spec=bad), ctx)
    h.load_model(pb.LoadModelRequest(handle="ng3", spec=spec(tok_dir)), ctx)
    q = rows(ctx, "ng3", CORPUS[:2])
    with pytest.raises(WorkerError, match="only scores texts"):
        h.score_sequences(pb.ScoreSequencesRequest(handle="ng3", batch=pb.TensorBatch(tensors={
            "query_ids": q.tensors["input_ids"], "query_lengths": q.tensors["lengths"],
            "response_ids": q.tensors["input_ids"], "response_lengths": q.tensors["lengths"]}), logprobs=True), ctx)
