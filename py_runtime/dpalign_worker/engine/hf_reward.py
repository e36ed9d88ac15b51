"""A Hugging Face sequence classifier as the reward (the paper's scenario 1 uses a RoBERTa sentiment
model fine-tuned on TweetEval), and what every text-scoring reward shares.

The classifier's tokenizer is not the policy's, so the rows the control plane sends (the policy's
token ids) are decoded with the policy's tokenizer, and the text re-tokenized with the classifier's.
The reward of a text is the classifier's logit of class `label_index` (the raw logit, as the paper
and TRL's sentiment example use it; not a softmax probability, whose gradient vanishes once a class
is confident).

Models given as a Hugging Face id rather than a directory are read from the local cache (HF_HOME)
with local_files_only: this worker never downloads. `hf_location` gives the one message that says
what to do when an id is not cached.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import invalid_argument, not_found, unsupported_model

_SCORE_CHUNK = 64


@dataclass(frozen=True)
class HfClassifierConfig:
    """HfClassifierSpec in worker.proto."""
    path: str
    label_index: int = 0
    tokenizer: str = ""
    tokenizer_dir: str = ""
    max_tokens: int = 0


# -- locations -------------------------------------------------------------------------------------
def hub_cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def hf_location(name: str, what: str) -> str:
    """A local directory for `name`: the directory itself, or the snapshot of a Hugging Face id in
    the local cache. Never downloads; a missing one fails with what to do."""
    if not name:
        raise invalid_argument(f"{what}: no path or Hugging Face id given")
    if os.path.isdir(name):
        return name
    if _looks_like_path(name):
        raise not_found(f"{what} {name!r}: no such directory", path=name)
    cache = hub_cache_dir()
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, cache_dir=cache, local_files_only=True)
    except Exception as e:  # not cached, or not a valid id: the same advice either way
        home = os.environ.get("HF_HOME", "(unset; default ~/.cache/huggingface)")
        raise not_found(
            f"{what} {name!r} is not a local directory ({os.path.abspath(name)} does not exist) and not a "
            f"Hugging Face id in the local cache ({cache}; HF_HOME={home}). dpalign works offline and never "
            f"downloads: put the model directory there, or fetch the id on a machine with network access with "
            f"`huggingface-cli download {name}` into the same HF_HOME",
            id=name, hf_home=home, cache=cache, reason=type(e).__name__) from None


def load_policy_tokenizer(name: str):
    """The policy's tokenizer (the tiny model's directory, or the policy's Hugging Face directory or cached id)."""
    from transformers import AutoTokenizer

    from .tokenizer import ensure_pad

    path = hf_location(name, "the policy's tokenizer (tokenizer_dir)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ensure_pad(tok)
    return tok


# -- scoring texts ---------------------------------------------------------------------------------
class TextReward(nn.Module):
    """A reward of texts. score_sequences decodes the policy's token rows and calls score_texts."""

    value_head = None
    lm = None

    def score_texts(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, *_a, **_k):
        raise invalid_argument("this reward scores texts through score_sequences (rewards = true) only")


def _decode(tok, ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    return [tok.decode(ids[i, : int(lengths[i])].tolist(), skip_special_tokens=True) for i in range(ids.shape[0])]


def score_rows(m, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """score_sequences for a TextReward: prompts and completions when the batch has query/response
    ids, else empty prompts and each row's whole text as the completion."""
    from .batch import check_lengths

    if all(k in batch for k in ("query_ids", "query_lengths", "response_ids", "response_lengths")):
        q, ql, r, rl = (batch[k].long() for k in ("query_ids", "query_lengths", "response_ids", "response_lengths"))
        check_lengths(q, ql, "query_ids")
        check_lengths(r, rl, "response_ids")
        prompts, completions = _decode(m.tokenizer, q, ql), _decode(m.tokenizer, r, rl)
    elif "input_ids" in batch and "lengths" in batch:
        ids, lengths = batch["input_ids"].long(), batch["lengths"].long()
        check_lengths(ids, lengths, "input_ids")
        completions = _decode(m.tokenizer, ids, lengths)
        prompts = [""] * len(completions)
    else:
        raise invalid_argument("rewards need input_ids/lengths or query_ids/query_lengths/response_ids/response_lengths")
    m.model.eval()
    return {"rewards": m.model.score_texts(prompts, completions).float().cpu()}


# -- the Hugging Face classifier -------------------------------------------------------------------
class HfClassifierReward(TextReward):
    def __init__(self, clf: nn.Module, tok, label_index: int, max_tokens: int, device: torch.device) -> None:
        super().__init__()
        self.reward_head = clf  # the scorer, under the name the engine looks for
        self.tok, self.label_index, self.max_tokens, self.device = tok, label_index, max_tokens, device

    @torch.no_grad()
    def score_texts(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        texts = [p + c for p, c in zip(prompts, completions)]
        limit = self.max_tokens or min(int(getattr(self.tok, "model_max_length", 512) or 512), 4096)
        out = []
        for i in range(0, len(texts), _SCORE_CHUNK):
            enc = self.tok(texts[i:i + _SCORE_CHUNK], padding=True, truncation=True, max_length=limit, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            out.append(self.reward_head(**enc).logits[:, self.label_index].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def build(handle: str, cfg: HfClassifierConfig, device: torch.device, dtype):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .lora import LoraConfig
    from .models import LoadedModel
    from .tokenizer import ensure_pad

    path = hf_location(cfg.path, "reward classifier (reward.path)")
    try:
        clf = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise unsupported_model(f"reward classifier {cfg.path!r}: not a Hugging Face sequence-classification model ({e})",
                                path=path) from None
    n_labels = int(getattr(clf.config, "num_labels", 0) or 0)
    if not 0 <= cfg.label_index < n_labels:
        labels = getattr(clf.config, "id2label", {}) or {}
        raise invalid_argument(f"reward.labelIndex {cfg.label_index} is out of range: {cfg.path!r} has {n_labels} "
                               f"classes ({', '.join(f'{k}={v}' for k, v in sorted(labels.items()))})",
                               num_labels=n_labels)
    own = hf_location(cfg.tokenizer, "reward tokenizer (reward.tokenizer)") if cfg.tokenizer else path
    tok = AutoTokenizer.from_pretrained(own, local_files_only=True)
    if tok.pad_token is None:
        ensure_pad(tok)
        clf.config.pad_token_id = tok.pad_token_id
    clf.to(device).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    model = HfClassifierReward(clf, tok, int(cfg.label_index), int(cfg.max_tokens), device)
    return LoadedModel(
        handle=handle, model=model, tokenizer=load_policy_tokenizer(cfg.tokenizer_dir), device=device,
        lora=LoraConfig(), trainable={},
        source={"hf_classifier": {"path": cfg.path, "label_index": cfg.label_index, "tokenizer": cfg.tokenizer}},
    )
