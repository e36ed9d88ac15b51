"""Optimizers that take the privatised gradient as given: DP-AdamW (the noisy gradient enters the
moment estimates, i.e. noise before moments) and DP-SGD (optional momentum). State is a flat dict
of tensors so that checkpoints hold it as safetensors."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import invalid_argument


class DPSGD:
    name = "sgd"

    def __init__(self, params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
                 momentum: float = 0.0) -> None:
        self.params, self.lr, self.weight_decay, self.momentum = params, lr, weight_decay, momentum
        self.steps = 0
        self.state: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        self.steps += 1
        for n, p in self.params.items():
            g = grads[n].to(p.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                buf = self.state.get(f"momentum.{n}")
                buf = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
                self.state[f"momentum.{n}"] = buf
                g = buf
            p.add_(g, alpha=-lr)


class DPAdamW:
    name = "adamw"

    def __init__(self, params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.weight_decay, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.steps = 0
        self.state: dict[str, torch.Tensor] = {}
        for n, p in params.items():
            self.state[f"exp_avg.{n}"] = torch.zeros_like(p, dtype=torch.float32)
            self.state[f"exp_avg_sq.{n}"] = torch.zeros_like(p, dtype=torch.float32)

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for n, p in self.params.items():
            g = grads[n].float()
            m, v = self.state[f"exp_avg.{n}"], self.state[f"exp_avg_sq.{n}"]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            if self.weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            update = (m / c1) / ((v / c2).sqrt() + self.eps)
            p.add_(update.to(p.dtype), alpha=-lr)


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer as asked for (OptimizerSpec in worker.proto, converted in handlers/). A 0 for
    beta1, beta2 or eps means the default: 0.9, 0.999, 1e-8."""
    name: str                   # "adamw" or "sgd"
    lr: float
    weight_decay: float = 0.0
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0
    momentum: float = 0.0       # sgd only


def from_spec(spec: OptimizerConfig, params: dict[str, torch.nn.Parameter]):
    """OptimizerConfig -> (optimizer, json-able config with the defaults filled in)."""
    name = spec.name
    b1 = spec.beta1 or 0.9
    b2 = spec.beta2 or 0.999
    eps = spec.eps or 1e-8
    cfg = dict(asdict(spec), beta1=b1, beta2=b2, eps=eps)
    for k in ("lr", "weight_decay", "eps", "momentum"):
        if not math.isfinite(cfg[k]) or cfg[k] < 0:
            raise invalid_argument(f"optimizer {k} must be a finite number >= 0", value=cfg[k])
    if name == "adamw":
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise invalid_argument("adamw betas must lie in [0, 1)", beta1=b1, beta2=b2)
        return DPAdamW(params, spec.lr, spec.weight_decay, (b1, b2), eps), cfg
    if name == "sgd":
        return DPSGD(params, spec.lr, spec.weight_decay, spec.momentum), cfg
    raise invalid_argument(f"unknown optimizer {name!r}", supported="adamw,sgd")
