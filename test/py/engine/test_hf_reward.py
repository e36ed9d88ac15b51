"""reward.kind hf (engine/hf_reward.py) and Hugging Face ids read from the local cache: a tiny
BertForSequenceClassification with its own WordPiece tokenizer, built and saved by the test (no
downloads), scores the policy's token rows by decoding them and re-tokenizing; a model given as a
Hugging Face id loads from a cache layout the test writes under HF_HOME, and an uncached id fails
with one message that names the id, HF_HOME and how to fetch it."""
from __future__ import annotations

import os

import pytest
import torch

from dpalign_worker.engine.models import ModelConfig, build_model
from dpalign_worker.errors import WorkerError
from dpalign_worker.handlers import engine as h
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.tensors import batch_from_proto, batch_to_proto

WORDS = ["the", "movie", "was", "great", "awful", "and", "i", "loved", "it", "a", "film", ",", "."]


def save_bert(out: str, num_labels: int = 3, seed: int = 0) -> str:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab_file=os.path.join(out, "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(cfg).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def direct_logits(path: str, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def hf_spec(path: str, tok_dir: str, label_index: int = 2, tokenizer: str = "") -> pb.ModelSpec:
    return pb.ModelSpec(hf_classifier=pb.HfClassifierSpec(path=path, label_index=label_index, tokenizer=tokenizer,
                                                          tokenizer_dir=tok_dir))


def fake_hub_cache(hf_home: str, repo_id: str, src_dir: str) -> None:
    """The layout huggingface_hub writes: hub/models--org--name/{refs/main, snapshots/<commit>/files}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = os.path.join(hf_home, "hub", "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    for name in os.listdir(src_dir):
        os.symlink(os.path.join(src_dir, name), os.path.join(snap, name))


def test_scores_the_policys_rows_as_the_classifiers_logit_of_label_index(ctx, tok_dir, tmp_path):
    path = save_bert(str(tmp_path / "bert"))
    info = h.load_model(pb.LoadModelRequest(handle="hfr", spec=hf_spec(path, tok_dir, label_index=2)), ctx)
    assert info.trainable_parameters == 0
    texts = ["the movie was great", "awful film, i loved it", "a"]
    rows = h.tokenize(pb.TokenizeRequest(handle="hfr", texts=texts), ctx)  # the policy's tokenizer
    from transformers import AutoTokenizer

    b = batch_from_proto(rows)
    own = AutoTokenizer.from_pretrained(path)(texts[0], add_special_tokens=False)["input_ids"]
    assert b["input_ids"][0, : int(b["lengths"][0])].tolist() != own  # the rows are not the classifier's ids
    got = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="hfr", batch=rows, rewards=True), ctx))
    want = direct_logits(path, texts)[:, 2]
    assert torch.allclose(got["rewards"], want, atol=1e-5)
    # (prompt, completion) pairs score as the joined text
    q = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle="hfr", texts=["the movie", "awful"]), ctx))
    r = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle="hfr", texts=[" was great", " film, i loved it"]), ctx))
    pairs = {"query_ids": q["input_ids"], "query_lengths": q["lengths"], "response_ids": r["input_ids"], "response_lengths": r["lengths"]}
    got2 = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="hfr", batch=batch_to_proto(pairs), rewards=True), ctx))
    assert torch.allclose(got2["rewards"], want[:2], atol=1e-5)
    # another label index is another class's logit
    h.load_model(pb.LoadModelRequest(handle="hfr0", spec=hf_spec(path, tok_dir, label_index=0)), ctx)
    got0 = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="hfr0", batch=rows, rewards=True), ctx))
    assert torch.allclose(got0["rewards"], direct_logits(path, texts)[:, 0], atol=1e-5)


def test_refuses_a_bad_label_index_a_missing_directory_and_token_requests(ctx, tok_dir, tmp_path):
    path = save_bert(str(tmp_path / "bert"), num_labels=2)
    with pytest.raises(WorkerError, match=r"reward.labelIndex 2 is out of range: .* has 2 classes"):
        h.load_model(pb.LoadModelRequest(handle="x", spec=hf_spec(path, tok_dir, label_index=2)), ctx)
    with pytest.raises(WorkerError, match="no such directory") as e:
        h.load_model(pb.LoadModelRequest(handle="x", spec=hf_spec(str(tmp_path / "nope"), tok_dir)), ctx)
    assert "reward classifier (reward.path)" in e.value.message
    h.load_model(pb.LoadModelRequest(handle="hfr", spec=hf_spec(path, tok_dir, label_index=1)), ctx)
    q = h.tokenize(pb.TokenizeRequest(handle="hfr", texts=["the movie"]), ctx)
    with pytest.raises(WorkerError, match="reward of texts"):
        h.score_sequences(pb.ScoreSequencesRequest(handle="hfr", batch=q, logprobs=True), ctx)
    with pytest.raises(WorkerError, match="not trainable"):
        h.load_model(pb.LoadModelRequest(handle="x", spec=hf_spec(path, tok_dir, label_index=1),
                                         optimizer=pb.OptimizerSpec(name=pb.adamw, lr=1e-3)), ctx)


def test_hugging_face_ids_load_from_the_local_cache_only(ctx, tok_dir, tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hub_cache(str(home), "dpalign-test/tiny-bert", save_bert(str(tmp_path / "bert")))
    # a causal LM for the policy, and its tokenizer, under an id too
    lm_dir = tmp_path / "gpt2"
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    fake_hub_cache(str(home), "dpalign-test/tiny-gpt2", str(lm_dir))

    # reward.path and the policy's tokenizer given as ids
    h.load_model(pb.LoadModelRequest(handle="hfid", spec=hf_spec("dpalign-test/tiny-bert", "dpalign-test/tiny-gpt2", 1)), ctx)
    rows = h.tokenize(pb.TokenizeRequest(handle="hfid", texts=["the movie was great"]), ctx)
    got = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="hfid", batch=rows, rewards=True), ctx))
    assert torch.allclose(got["rewards"], direct_logits(str(tmp_path / "bert"), ["the movie was great"])[:, 1], atol=1e-5)
    # model.hfPath given as an id
    m = build_model("policy", ModelConfig(hf_path="dpalign-test/tiny-gpt2"), "cpu")
    assert m.model.lm.config.n_embd == 16 and len(m.tokenizer) == len(tok)

    for what, load in (
        ("reward classifier (reward.path)", lambda: h.load_model(pb.LoadModelRequest(handle="x", spec=hf_spec("someorg/not-cached", tok_dir)), ctx)),
        ("model (model.hfPath)", lambda: build_model("p", ModelConfig(hf_path="someorg/not-cached"), "cpu")),
    ):
        with pytest.raises(WorkerError) as e:
            load()
        msg = e.value.message
        assert what in msg and "'someorg/not-cached'" in msg and f"HF_HOME={home}" in msg
        assert "huggingface-cli download someorg/not-cached" in msg and "never downloads" in msg
        assert e.value.code == pb.NOT_FOUND
