"""A linear sentiment classifier on hashed n-gram features of token ids (fastText-style): the logit
of a text is the mean weight of its n-grams (unigrams .. max_n-grams, each hashed into one of
`buckets` rows of a weight table) plus a bias.

Why the mean and not the sum: PPO optimises this score, and under a sum a policy could raise it
without bound by repeating one positive word; under the mean, repetition can at most reach that
n-gram's own weight. The mean also keeps the scale of a 20-token completion comparable with that of
a 500-token review.

The model fits the engine's contract for a reward model: `forward(input_ids, want="rewards")`
returns a score at every position ([B, L], the score of the prefix ending there, from a cumulative
sum), so the classification loss, score_sequences and checkpoints work unchanged; right padding
never reaches a real position's score. Its parameters live under `reward_head.` so checkpoints
(weights.safetensors) and init_from_checkpoint treat them as a head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import invalid_argument

# Polynomial rolling hash modulo a Mersenne prime: every intermediate stays below 2^62 in int64.
_PRIME = (1 << 31) - 1
_MULT = 1_000_003


@dataclass(frozen=True)
class NgramConfig:
    """NgramModelSpec in worker.proto."""
    buckets: int = 1 << 20
    max_n: int = 2
    tokenizer_dir: str = ""         # the policy's tokenizer (a directory AutoTokenizer loads)


def ngram_hashes(input_ids: torch.Tensor, max_n: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, L] -> (bucket ids [B, L, max_n], valid [B, L, max_n]): column n-1 holds the
    n-gram that ends at each position (invalid where fewer than n tokens precede it)."""
    ids = input_ids.long()
    b, length = ids.shape
    h = torch.zeros_like(ids)
    cols, valid = [], []
    pos = torch.arange(length, device=ids.device)
    for n in range(1, max_n + 1):
        # extend every (n-1)-gram ending at t-1 by token t: h_n[t] = h_{n-1}[t-1] * M + id[t] + 1,
        # seeded with n so that a unigram and a bigram never share a hash by construction
        prev = torch.full_like(ids, n) if n == 1 else torch.cat([torch.full_like(ids[:, :1], n), h[:, :-1]], 1)
        h = (prev * _MULT + ids + 1) % _PRIME
        cols.append(h % buckets)
        valid.append((pos >= n - 1).unsqueeze(0).expand(b, length))
    return torch.stack(cols, -1), torch.stack(valid, -1)


class _Table(nn.Module):
    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(buckets))
        self.bias = nn.Parameter(torch.zeros(1))


class NgramClassifier(nn.Module):
    """Hashed n-gram linear classifier; see the module docstring."""

    value_head = None
    lm = None  # no language model: generation and log-probs are refused by the handlers that need them

    def __init__(self, cfg: NgramConfig) -> None:
        super().__init__()
        if cfg.buckets < 2 or cfg.buckets > (1 << 26):
            raise invalid_argument("ngram buckets must be in [2, 2^26]", buckets=cfg.buckets)
        if not 1 <= cfg.max_n <= 5:
            raise invalid_argument("ngram max_n must be in [1, 5]", max_n=cfg.max_n)
        self.cfg = cfg
        self.reward_head = _Table(cfg.buckets)

    def forward(self, input_ids: torch.Tensor, want: str = "rewards", **_kw) -> dict[str, torch.Tensor]:
        if want != "rewards":
            raise invalid_argument(f"an n-gram classifier only scores texts (want='rewards'), not {want!r}")
        idx, valid = ngram_hashes(input_ids, self.cfg.max_n, self.cfg.buckets)
        mask = valid.to(self.reward_head.weight.dtype)
        w = self.reward_head.weight[idx] * mask                    # [B, L, n]
        total = w.sum(-1).cumsum(1)                                # [B, L]
        count = mask.sum(-1).cumsum(1)
        return {"rewards": total / count + self.reward_head.bias}


def build(handle: str, cfg: NgramConfig, device: torch.device, optimizer_spec, init_checkpoint: str, dtype):
    """A LoadedModel holding an NgramClassifier (zero weights, or a checkpoint's) and the policy's tokenizer."""
    from . import checkpoint, optim
    from .hf_reward import load_policy_tokenizer
    from .models import LoadedModel

    tok = load_policy_tokenizer(cfg.tokenizer_dir)
    model = NgramClassifier(cfg)
    if init_checkpoint:
        checkpoint.init_from_checkpoint(model, init_checkpoint)
    model.to(device=device, dtype=dtype)
    trainable = {n: p for n, p in model.named_parameters()}
    loaded = LoadedModel(
        handle=handle, model=model, tokenizer=tok, device=device, lora=_no_lora(), trainable=trainable,
        source={"ngram": {"buckets": cfg.buckets, "max_n": cfg.max_n, "tokenizer_dir": cfg.tokenizer_dir}},
        base_in_checkpoint=True,
    )
    if optimizer_spec is not None:
        loaded.optimizer, loaded.optimizer_spec = optim.from_spec(optimizer_spec, trainable)
    return loaded


def _no_lora():
    from .lora import LoraConfig

    return LoraConfig()
