"""Training objectives by name: `prepare` turns the request's tensors into per-example tensors
(first dim = example, padding trimmed, pairs packed), `compute` runs the model through a forward
function and returns the per-example loss [B] and per-example metrics. `compute` is written for a
batch of B examples and is called with B = 1 under torch.func.vmap for per-example gradients.

LOSS_TENSORS names the request tensors of each loss: the TS side builds them in
ts/worker/batches.ts (its `T` constants), and test/ts/worker/batch-names.test.ts checks that both
sides name the same tensors. LOSS_PARAMS gives the parameter class of each loss that has
parameters (the worker requires every field: the defaults live in the control plane only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import torch

from ..errors import invalid_argument
from . import losses
from .batch import check_lengths, pack, require, response_mask, trim

Forward = Callable[..., dict]  # forward(input_ids, want=...) -> model outputs


@dataclass(frozen=True)
class PpoParams:
    """PPO's clipped objective (PpoParams in worker.proto); no defaults here, on purpose."""
    clip_range: float
    clip_range_value: float
    vf_coef: float


LossParams = PpoParams  # the union of the parameter classes (one today)

PPO_TENSORS = ("query_ids", "query_lengths", "response_ids", "response_lengths",
               "old_logprobs", "old_values", "advantages", "returns")

# Request tensors per loss: required ones, then optional ones.
LOSS_TENSORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "causal_lm": (("input_ids", "lengths", "loss_mask"), ()),
    "classification": (("input_ids", "lengths", "labels"), ()),
    "pairwise_reward": (("chosen_ids", "chosen_lengths", "rejected_ids", "rejected_lengths"), ()),
    "ppo": (PPO_TENSORS, ()),
    "dirac_canary": (("canary_index",), ("canary_scale",)),
}


def _required(loss: str) -> tuple[str, ...]:
    return LOSS_TENSORS[loss][0]


@dataclass(frozen=True)
class Objective:
    name: str
    prepare: Callable[[dict, int], dict]
    compute: Callable[[Forward, dict, "LossParams | None"], tuple[torch.Tensor, dict]]


def _last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, L] -> x[b, lengths[b]-1] [B]."""
    return x.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)


# causal_lm -------------------------------------------------------------------------------------
def _prep_lm(b: dict, pad_id: int) -> dict:
    require(b, _required("causal_lm"), "loss causal_lm")
    ids, lengths = b["input_ids"].long(), b["lengths"].long()
    check_lengths(ids, lengths, "input_ids")
    if b["loss_mask"].shape != ids.shape:
        raise invalid_argument("loss_mask must have the shape of input_ids", shape=list(b["loss_mask"].shape))
    ids = trim(ids, lengths, 2)
    real = (torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).float()
    mask = b["loss_mask"][:, : ids.shape[1]].float() * real
    return {"input_ids": ids, "loss_mask": mask}


def _lm(fwd: Forward, b: dict, _p: None):
    logits = fwd(b["input_ids"], want="logits")["logits"]
    return losses.causal_lm_loss(logits, b["input_ids"], b["loss_mask"]), {}


# classification ---------------------------------------------------------------------------------
def _prep_cls(b: dict, pad_id: int) -> dict:
    require(b, _required("classification"), "loss classification")
    ids, lengths = b["input_ids"].long(), b["lengths"].long()
    check_lengths(ids, lengths, "input_ids", min_len=1)
    return {"input_ids": trim(ids, lengths), "lengths": lengths, "labels": b["labels"].long()}


def _cls(fwd: Forward, b: dict, _p: None):
    r = _last(fwd(b["input_ids"], want="rewards")["rewards"], b["lengths"])
    acc = ((r > 0).long() == b["labels"]).float().detach()
    return losses.classification_loss(r, b["labels"]), {"accuracy": acc}


# pairwise_reward -------------------------------------------------------------------------------
def _prep_pair(b: dict, pad_id: int) -> dict:
    names = _required("pairwise_reward")
    require(b, names, "loss pairwise_reward")
    c, cl, r, rl = (b[k].long() for k in names)
    check_lengths(c, cl, "chosen_ids", min_len=1)
    check_lengths(r, rl, "rejected_ids", min_len=1)
    width = max(int(cl.max()) if cl.numel() else 1, int(rl.max()) if rl.numel() else 1)

    def fit(x):
        x = x[:, :width]
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=pad_id)

    return {"pair_ids": torch.stack([fit(c), fit(r)], 1), "pair_lengths": torch.stack([cl, rl], 1)}


def _pair(fwd: Forward, b: dict, _p: None):
    ids = b["pair_ids"]
    rewards = fwd(ids.reshape(-1, ids.shape[-1]), want="rewards")["rewards"]
    r = _last(rewards, b["pair_lengths"].reshape(-1)).reshape(-1, 2)
    acc = (r[:, 0] > r[:, 1]).float().detach()
    return losses.pairwise_reward_loss(r[:, 0], r[:, 1]), {"accuracy": acc, "margin": (r[:, 0] - r[:, 1]).detach()}


# ppo -------------------------------------------------------------------------------------------
def _prep_ppo(b: dict, pad_id: int) -> dict:
    require(b, PPO_TENSORS, "loss ppo")
    q, ql, r, rl = (b[k].long() for k in PPO_TENSORS[:4])
    check_lengths(q, ql, "query_ids", min_len=1)
    check_lengths(r, rl, "response_ids")
    for k in PPO_TENSORS[4:]:
        if b[k].shape != r.shape:
            raise invalid_argument(f"{k} must have the shape of response_ids", shape=list(b[k].shape))
    width = max(int(rl.max()) if rl.numel() else 0, 1)
    r = torch.nn.functional.pad(r, (0, max(width - r.shape[1], 0)), value=pad_id)[:, :width]
    seq, _, pos = pack(trim(q, ql), ql, r, rl, pad_id)
    out = {"seq": seq, "resp_ids": r, "resp_pos": pos, "mask": response_mask(rl, width)}
    for k in PPO_TENSORS[4:]:
        v = b[k].float()
        out[k] = torch.nn.functional.pad(v, (0, max(width - v.shape[1], 0)))[:, :width]
    return out


def _ppo(fwd: Forward, b: dict, p: PpoParams):
    out = fwd(b["seq"], want="logits_values")
    pos = b["resp_pos"]
    logits = out["logits"].gather(1, pos.unsqueeze(-1).expand(*pos.shape, out["logits"].shape[-1]))
    values = out["values"].gather(1, pos).float()
    logprobs = losses.token_logprobs(logits, b["resp_ids"])
    return losses.ppo_loss(
        logprobs, values, b["old_logprobs"], b["old_values"], b["advantages"], b["returns"], b["mask"],
        clip_range=p.clip_range, clip_range_value=p.clip_range_value, vf_coef=p.vf_coef,
    )


# dirac_canary ------------------------------------------------------------------------------------
def _prep_canary(b: dict, pad_id: int) -> dict:
    require(b, _required("dirac_canary"), "loss dirac_canary")
    idx = b["canary_index"]
    if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise invalid_argument("canary_index must be an integer tensor [n]", shape=list(idx.shape), dtype=str(idx.dtype))
    idx = idx.long()
    if idx.numel() and int(idx.min()) < 0:
        raise invalid_argument("canary_index must be >= 0 (an index into the flattened trainable parameters)")
    if "canary_scale" in b:
        require(b, _required("dirac_canary") + LOSS_TENSORS["dirac_canary"][1], "loss dirac_canary")
        scale = b["canary_scale"].float()
        if scale.dim() != 1:
            raise invalid_argument("canary_scale must be [n]", shape=list(scale.shape))
        if scale.numel() and not bool(torch.isfinite(scale).all()):
            raise invalid_argument("canary_scale must be finite")
    else:
        scale = torch.ones(idx.shape[0])
    return {"canary_index": idx, "canary_scale": scale}


def _canary(fwd: Forward, b: dict, _p: None):
    params = getattr(fwd, "params", None)
    if not params:
        raise invalid_argument("loss dirac_canary needs the trainable parameters, which this backend does not expose")
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    try:
        loss = losses.dirac_canary_loss(flat, b["canary_index"], b["canary_scale"])
    except IndexError as e:  # raised under vmap too, where the index cannot be inspected beforehand
        raise invalid_argument(f"canary_index out of range: the model has {flat.shape[0]} trainable parameters ({e})") from e
    return loss, {}


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("causal_lm", _prep_lm, _lm),
        Objective("classification", _prep_cls, _cls),
        Objective("pairwise_reward", _prep_pair, _pair),
        Objective("ppo", _prep_ppo, _ppo),
        Objective("dirac_canary", _prep_canary, _canary),
    )
}
LOSS_PARAMS: dict[str, type] = {"ppo": PpoParams}


def get_objective(name: str) -> Objective:
    obj = OBJECTIVES.get(name)
    if obj is None:
        raise invalid_argument(f"unknown loss {name!r}", supported=",".join(OBJECTIVES))
    return obj


def check_loss_params(name: str, params: "LossParams | None") -> "LossParams | None":
    """The loss's parameters, checked: present exactly when the loss takes them, all finite >= 0."""
    cls = LOSS_PARAMS.get(name)
    if cls is None:
        if params is not None:
            raise invalid_argument(f"loss {name!r} takes no parameters, got {type(params).__name__}")
        return None
    if not isinstance(params, cls):
        raise invalid_argument(f"loss {name!r} needs its parameters ({cls.__name__}: "
                               f"{', '.join(f.name for f in fields(cls))})")
    for f in fields(cls):
        v = getattr(params, f.name)
        if not math.isfinite(v) or v < 0:
            raise invalid_argument(f"{name} parameter {f.name} must be a finite number >= 0", value=v)
    return params
