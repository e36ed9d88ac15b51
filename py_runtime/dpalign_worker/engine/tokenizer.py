"""Tokenisers: training dpalign's byte-level BPE on the public corpus, encoding and decoding batches
in the batch contract (right-padded int64 ids with int64 lengths)."""
from __future__ import annotations

import os
from typing import Sequence

import torch

from ..errors import invalid_argument, not_found

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: str) -> tuple[str, int]:
    """Trains a byte-level BPE with EOS and PAD specials; saves it loadable as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise invalid_argument("train_tokenizer needs at least one text")
    if not out_dir:
        raise invalid_argument("train_tokenizer needs out_dir")
    if vocab_size < 260:
        raise invalid_argument("vocab_size must be at least 260 (256 bytes plus specials)", vocab_size=vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir, len(fast)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise not_found(f"tokenizer directory {path!r} does not exist; create it with train_tokenizer", dir=path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ensure_pad(tok)
    return tok


def ensure_pad(tok) -> None:
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise invalid_argument("the tokenizer has neither a PAD nor an EOS token")
        tok.pad_token = tok.eos_token


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    n = len(seqs)
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((n, width), pad_id, dtype=torch.int64)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.int64)
    return {"input_ids": ids, "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.int64)}


def encode(tok, texts: Sequence[str], max_tokens: int = 0, append_eos: bool = False) -> dict[str, torch.Tensor]:
    """Plain tokens (no BOS); with max_tokens > 0 the result, EOS included, has at most max_tokens."""
    seqs = []
    for text in texts:
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if max_tokens > 0:
            ids = ids[: max(max_tokens - (1 if append_eos else 0), 0)]
        if append_eos:
            ids.append(tok.eos_token_id)
        seqs.append(ids)
    return pad_right(seqs, tok.pad_token_id)


def decode(tok, input_ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    if input_ids.dim() != 2 or lengths.shape != (input_ids.shape[0],):
        raise invalid_argument("decode needs input_ids [n, L] and lengths [n]")
    return [
        tok.decode(input_ids[i, : int(lengths[i])].tolist(), skip_special_tokens=True)
        for i in range(input_ids.shape[0])
    ]
