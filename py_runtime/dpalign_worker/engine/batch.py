"""Batch-contract helpers: checking named tensors, trimming padding, packing (query, response)
pairs into one right-padded sequence, and splitting a logical batch into micro-batches."""
from __future__ import annotations

from typing import Iterator

import torch

from ..errors import invalid_argument


def require(batch: dict[str, torch.Tensor], names: tuple[str, ...], what: str) -> None:
    missing = [k for k in names if k not in batch]
    if missing:
        raise invalid_argument(f"{what} needs tensors {list(names)}; missing {missing}", present=",".join(batch))
    n = batch[names[0]].shape[0] if batch[names[0]].dim() else -1
    for k in names:
        if batch[k].dim() == 0 or batch[k].shape[0] != n:
            raise invalid_argument(f"{what}: every tensor's first dimension must be the example count {n}",
                                   tensor=k, shape=list(batch[k].shape))


def check_lengths(ids: torch.Tensor, lengths: torch.Tensor, name: str, min_len: int = 0) -> None:
    if ids.dim() != 2 or lengths.dim() != 1 or lengths.shape[0] != ids.shape[0]:
        raise invalid_argument(f"{name} must be [n, L] with lengths [n]",
                               ids_shape=list(ids.shape), lengths_shape=list(lengths.shape))
    if lengths.numel() and (int(lengths.min()) < min_len or int(lengths.max()) > ids.shape[1]):
        raise invalid_argument(f"{name}_lengths must lie in [{min_len}, {ids.shape[1]}]")


def trim(ids: torch.Tensor, lengths: torch.Tensor, min_width: int = 1) -> torch.Tensor:
    width = max(int(lengths.max()) if lengths.numel() else 0, min_width)
    return ids[:, :width]


def pack(query: torch.Tensor, q_len: torch.Tensor, response: torch.Tensor, r_len: torch.Tensor,
         pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query [n, Lq], response [n, Lr]) -> seq [n, S] = query[:ql] + response[:rl] right-padded,
    seq lengths [n], and resp_pos [n, Lr]: the position whose logits predict response token t
    (ql + t - 1, clamped into the sequence; only t < rl is meaningful)."""
    n, lr = response.shape
    total = q_len + r_len
    width = max(int(total.max()) if n else 0, 1)
    j = torch.arange(width, device=query.device).expand(n, width)
    ql = q_len.unsqueeze(1)
    qi = j.clamp(max=max(query.shape[1] - 1, 0))
    ri = (j - ql).clamp(0, max(lr - 1, 0))
    q_tok = query.gather(1, qi) if query.shape[1] else torch.full_like(j, pad_id)
    r_tok = response.gather(1, ri) if lr else torch.full_like(j, pad_id)
    seq = torch.where(j < ql, q_tok, torch.where(j < (ql + r_len.unsqueeze(1)), r_tok, torch.full_like(j, pad_id)))
    t = torch.arange(lr, device=query.device).expand(n, lr)
    resp_pos = (ql + t - 1).clamp(0, width - 1)
    return seq, total, resp_pos


def response_mask(r_len: torch.Tensor, width: int) -> torch.Tensor:
    return (torch.arange(width, device=r_len.device).unsqueeze(0) < r_len.unsqueeze(1)).to(torch.float32)


def micro_batches(batch: dict[str, torch.Tensor], size: int) -> Iterator[dict[str, torch.Tensor]]:
    n = next(iter(batch.values())).shape[0] if batch else 0
    size = size or n or 1
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in batch.items()}


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    return next(iter(batch.values())).shape[0] if batch else 0
