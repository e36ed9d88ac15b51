"""Generation (seeded sampling with temperature, top-k, top-p) and scoring of given sequences
(log-probs, values, rewards). Everything here runs under torch.no_grad in eval mode.

Prompts arrive right-padded; generation left-pads them internally with an attention mask and
position ids counted from each prompt's first real token, so prompts of different lengths are
handled exactly as if each ran alone. Log-probs are those of the sampled token under the policy
at temperature 1, at the same positions that score_sequences and the PPO loss use; values[t] is
the value head at the position that predicts response token t.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import invalid_argument
from .batch import check_lengths, micro_batches, pack, response_mask
from .losses import token_logprobs
from .models import LoadedModel


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix with mass >= top_p
        logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    return logits


def sample_rows(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row of probs [n, V] by inverting its CDF at one seeded uniform per row.
    torch.multinomial on CPU took a third of the tiny demo's generation time (about 90 ms per
    step for 256 x 2048); this is a cumulative sum and a binary search. The CDF is float64 and
    the uniform is scaled by each row's total, so rounding cannot step past the last token, and a
    token of probability 0 (filtered by top-k/top-p) is never chosen (its CDF step is empty)."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, device=probs.device, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)


@contextmanager
def inference_attention(lm: nn.Module) -> Iterator[None]:
    """Runs the block with PyTorch's fused scaled-dot-product attention where the model supports
    it. Models are built with eager attention because per-example gradients (torch.func.vmap)
    need it; generation and scoring take no gradients, and SDPA halves their time on the tiny
    model here (same logits to float32 rounding, left padding included: test_generation.py).
    transformers reads the choice at every forward, so it is switched back afterwards. A model
    is never generated with and trained at the same time (one request per model at a time)."""
    before = getattr(getattr(lm, "config", None), "_attn_implementation", None)
    switch = before == "eager" and hasattr(lm, "set_attn_implementation")
    if switch:
        try:
            lm.set_attn_implementation("sdpa")
        except (ValueError, ImportError, NotImplementedError):
            switch = False  # a model without SDPA support keeps eager attention
    try:
        yield
    finally:
        if switch:
            lm.set_attn_implementation(before)


def generate(m: LoadedModel, ids: torch.Tensor, lengths: torch.Tensor, max_new_tokens: int,
             min_new_tokens: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
             seed: int = 0, return_values: bool = False) -> dict[str, torch.Tensor]:
    with inference_attention(m.model.lm):
        return _generate(m, ids, lengths, max_new_tokens, min_new_tokens, temperature, top_k, top_p, seed, return_values)


@torch.no_grad()
def _generate(m: LoadedModel, ids: torch.Tensor, lengths: torch.Tensor, max_new_tokens: int,
             min_new_tokens: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
             seed: int = 0, return_values: bool = False) -> dict[str, torch.Tensor]:
    check_lengths(ids, lengths, "input_ids", min_len=1)
    if temperature < 0 or not (0 <= top_p <= 1):
        raise invalid_argument("temperature must be >= 0 and top_p in [0, 1]", temperature=temperature, top_p=top_p)
    if return_values and m.model.value_head is None:
        raise invalid_argument("return_values needs a model with a value head")
    if m.model._plain:
        raise invalid_argument("generation needs a transformers-style model (KV cache, attention mask, position ids)")
    n, dev = ids.shape[0], m.device
    out = {"response_ids": torch.full((n, max_new_tokens), m.pad_id, dtype=torch.int64),
           "response_lengths": torch.zeros(n, dtype=torch.int64),
           "logprobs": torch.zeros(n, max_new_tokens)}
    if return_values:
        out["values"] = torch.zeros(n, max_new_tokens)
    if n == 0 or max_new_tokens == 0:
        return out
    width = int(lengths.max())
    left = torch.full((n, width), m.pad_id, dtype=torch.int64)
    mask = torch.zeros(n, width, dtype=torch.int64)
    for i in range(n):
        k = int(lengths[i])
        left[i, width - k:] = ids[i, :k]
        mask[i, width - k:] = 1
    left, mask = left.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    gen = torch.Generator(device=dev).manual_seed(int(seed) & ((1 << 63) - 1))
    m.model.eval()
    lm = m.model.lm
    res = lm(input_ids=left, attention_mask=mask, position_ids=pos, use_cache=True, output_hidden_states=return_values)
    finished = torch.zeros(n, dtype=torch.bool, device=dev)
    toks, lps, vals = [], [], []
    for t in range(max_new_tokens):
        logits = res.logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        if t < min_new_tokens:
            logits = logits.clone()
            logits[:, m.eos_id] = float("-inf")
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(_filter(logits / temperature, top_k, top_p), -1)
            tok = sample_rows(probs, gen)
        tok = torch.where(finished, torch.full_like(tok, m.pad_id), tok)
        toks.append(tok)
        lps.append(torch.where(finished, 0.0, logp.gather(1, tok.unsqueeze(1)).squeeze(1)))
        if return_values:
            v = m.model.value_head(res.hidden_states[-1][:, -1]).float()
            vals.append(torch.where(finished, 0.0, v))
        out["response_lengths"] += (~finished).long().cpu()
        finished = finished | (tok == m.eos_id)
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=dev)], 1)
        pos = pos[:, -1:] + 1
        res = lm(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=pos,
                 past_key_values=res.past_key_values, use_cache=True, output_hidden_states=return_values)
    steps = len(toks)
    out["response_ids"][:, :steps] = torch.stack(toks, 1).cpu()
    out["logprobs"][:, :steps] = torch.stack(lps, 1).cpu()
    if return_values:
        out["values"][:, :steps] = torch.stack(vals, 1).cpu()
    return out


def score(m: LoadedModel, batch: dict[str, torch.Tensor], logprobs: bool, values: bool, rewards: bool,
          micro_batch_size: int = 0) -> dict[str, torch.Tensor]:
    lm = getattr(m.model, "lm", None)
    if lm is None:  # reward-only sources (n-gram, Hugging Face classifier, Python function)
        return _score(m, batch, logprobs, values, rewards, micro_batch_size)
    with inference_attention(lm):
        return _score(m, batch, logprobs, values, rewards, micro_batch_size)


@torch.no_grad()
def _score(m: LoadedModel, batch: dict[str, torch.Tensor], logprobs: bool, values: bool, rewards: bool,
           micro_batch_size: int = 0) -> dict[str, torch.Tensor]:
    """Log-probs [n, Lr] and values [n, Lr] of given (query, response) pairs; rewards [n] at the last
    real token of input_ids/lengths (or of query + response)."""
    if not (logprobs or values or rewards):
        raise invalid_argument("score_sequences: ask for at least one of logprobs, values, rewards")
    if values and m.model.value_head is None:
        raise invalid_argument("values need a model with a value head")
    if rewards and m.model.reward_head is None:
        raise invalid_argument("rewards need a model with a reward head")
    m.model.eval()
    out: dict[str, torch.Tensor] = {}
    has_pair = all(k in batch for k in ("query_ids", "query_lengths", "response_ids", "response_lengths"))
    if logprobs or values:
        if not has_pair:
            raise invalid_argument("logprobs/values need query_ids, query_lengths, response_ids, response_lengths")
        q, ql, r, rl = (batch[k].long() for k in ("query_ids", "query_lengths", "response_ids", "response_lengths"))
        check_lengths(q, ql, "query_ids", min_len=1)
        check_lengths(r, rl, "response_ids")
        seq, _, pos = pack(q, ql, r, rl, m.pad_id)
        want = "logits_values" if values else "logits"
        lp_parts, v_parts = [], []
        for mb in micro_batches({"seq": seq, "pos": pos, "r": r, "rl": rl}, micro_batch_size):
            o = m.model(mb["seq"].to(m.device), want=want)
            p = mb["pos"].to(m.device)
            mask = response_mask(mb["rl"], r.shape[1]).to(m.device)
            if logprobs:
                lg = o["logits"].gather(1, p.unsqueeze(-1).expand(*p.shape, o["logits"].shape[-1]))
                lp_parts.append((token_logprobs(lg, mb["r"].to(m.device)) * mask).cpu())
            if values:
                v_parts.append((o["values"].float().gather(1, p) * mask).cpu())
        if logprobs:
            out["logprobs"] = torch.cat(lp_parts) if lp_parts else torch.zeros(0, r.shape[1])
        if values:
            out["values"] = torch.cat(v_parts) if v_parts else torch.zeros(0, r.shape[1])
    if rewards:
        if "input_ids" in batch and "lengths" in batch:
            seq, lengths = batch["input_ids"].long(), batch["lengths"].long()
            check_lengths(seq, lengths, "input_ids", min_len=1)
        elif has_pair:
            q, ql, r, rl = (batch[k].long() for k in ("query_ids", "query_lengths", "response_ids", "response_lengths"))
            seq, lengths, _ = pack(q, ql, r, rl, m.pad_id)
        else:
            raise invalid_argument("rewards need input_ids/lengths or query_ids/query_lengths/response_ids/response_lengths")
        parts = []
        for mb in micro_batches({"seq": seq, "len": lengths}, micro_batch_size):
            rw = m.model(mb["seq"].to(m.device), want="rewards")["rewards"]
            idx = (mb["len"].to(m.device) - 1).clamp_min(0).unsqueeze(1)
            parts.append(rw.float().gather(1, idx).squeeze(1).cpu())
        out["rewards"] = torch.cat(parts) if parts else torch.zeros(0)
    return out
