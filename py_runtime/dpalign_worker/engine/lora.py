"""LoRA (Hu et al. 2021) on Linear and transformers' Conv1D layers, without peft.

A wrapped layer computes base(x) + scale * dropout(x) A^T B^T, scale = alpha / rank, with A
[rank, in] (Kaiming-uniform) and B [out, rank] (zeros), so a fresh adapter is the identity. The
wrapped layer keeps the original module as `base_layer`; `canonical_name` strips that segment so
checkpoints name base weights as in the unwrapped model.

A target may select parts of a fused projection: GPT-2's `c_attn` computes query, key and value in
one layer, so `c_attn[q,v]` adapts only the query and value thirds of its output (the paper's
"rank 4 on attention query and value"); plain `c_attn` adapts all three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import invalid_argument


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 0
    alpha: float = 0.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default_factory=tuple)

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return (self.alpha or self.rank) / self.rank

    def to_json(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "target_modules": list(self.target_modules)}


FUSED_PARTS = ("q", "k", "v")  # output order of a fused attention projection (GPT-2's c_attn)


def parse_target(target: str) -> tuple[str, tuple[int, ...] | None]:
    """'c_attn[q,v]' -> ('c_attn', (0, 2)); 'q_proj' -> ('q_proj', None)."""
    t = target.strip()
    if not t.endswith("]"):
        return t, None
    name, _, sel = t[:-1].partition("[")
    parts = [p.strip() for p in sel.split(",") if p.strip()]
    bad = [p for p in parts if p not in FUSED_PARTS]
    if not name or not parts or bad or len(set(parts)) != len(parts):
        raise invalid_argument(
            f"LoRA target {target!r}: write NAME[parts] with parts from {','.join(FUSED_PARTS)}, e.g. c_attn[q,v]"
        )
    return name, tuple(sorted(FUSED_PARTS.index(p) for p in parts))


def parts_for(module_name: str, targets: tuple[str, ...]) -> tuple[int, ...] | None:
    """The fused-output parts selected for a wrapped module (None: the whole output)."""
    for t in targets:
        name, parts = parse_target(t)
        if module_name == name or module_name.endswith("." + name):
            return parts
    return None


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D

        return Conv1D
    except Exception:  # pragma: no cover - transformers always has it
        return None


def layer_dims(module: nn.Module) -> tuple[int, int, bool] | None:
    """(in_features, out_features, weight_is_in_by_out) for a supported layer, else None."""
    conv1d = _conv1d_type()
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    if conv1d is not None and isinstance(module, conv1d):
        w = module.weight
        return w.shape[0], w.shape[1], True
    return None


class LoraLayer(nn.Module):
    def __init__(self, base_layer: nn.Module, cfg: LoraConfig, generator: torch.Generator,
                 parts: tuple[int, ...] | None = None) -> None:
        super().__init__()
        dims = layer_dims(base_layer)
        assert dims is not None
        d_in, d_out, _ = dims
        self.parts = parts
        if parts is not None:
            if d_out % len(FUSED_PARTS):
                raise invalid_argument(f"cannot split an output of {d_out} features into {len(FUSED_PARTS)} fused parts")
            self.chunk = d_out // len(FUSED_PARTS)
            d_out = self.chunk * len(parts)
        self.base_layer = base_layer
        self.scale = cfg.scale
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        w = base_layer.weight
        a = torch.empty(cfg.rank, d_in)
        bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)) bound, drawn from our generator
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(d_out, cfg.rank, device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # scale the rank-r intermediate, not the wide output: fewer elementwise ops
        delta = ((self.dropout(x) @ self.lora_A.t()) * self.scale) @ self.lora_B.t()
        if self.parts is not None:
            # Scatter the selected parts' updates into the fused output, zeros elsewhere (no
            # in-place writes, so torch.func can vectorise it).
            pieces = delta.split(self.chunk, dim=-1)
            zeros = delta.new_zeros(*delta.shape[:-1], self.chunk)
            delta = torch.cat([pieces[self.parts.index(i)] if i in self.parts else zeros for i in range(len(FUSED_PARTS))], dim=-1)
        return self.base_layer(x) + delta



def delta_weight(base_layer: nn.Module, a: torch.Tensor, b: torch.Tensor, scale: float,
                 parts: tuple[int, ...] | None = None) -> torch.Tensor:
    """The adapter's update B A * scale in the base layer's weight layout (for merging)."""
    dims = layer_dims(base_layer)
    if dims is None:
        raise invalid_argument(f"cannot merge a LoRA adapter into a {type(base_layer).__name__}")
    if parts is not None:
        chunk = dims[1] // len(FUSED_PARTS)
        full = b.new_zeros(dims[1], b.shape[1])
        for j, i in enumerate(parts):
            full[i * chunk:(i + 1) * chunk] = b[j * chunk:(j + 1) * chunk]
        b = full
    d = (b @ a) * scale
    return d.t() if dims[2] else d


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    names = [parse_target(t)[0] for t in targets]
    return any(name == t or name.endswith("." + t) for t in names)


def apply_lora(model: nn.Module, cfg: LoraConfig, generator: torch.Generator) -> list[str]:
    """Wraps every Linear/Conv1D whose name matches a target; returns the wrapped module names."""
    if not cfg.target_modules:
        raise invalid_argument("LoRA rank > 0 needs target_modules (e.g. ['c_attn'] or ['q_proj', 'v_proj'])")
    found = [(n, m) for n, m in model.named_modules() if n and _matches(n, cfg.target_modules)]
    wrapped = []
    for name, module in found:
        if layer_dims(module) is None:
            raise invalid_argument(
                f"LoRA target {name!r} is a {type(module).__name__}; only Linear and Conv1D layers are supported"
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLayer(module, cfg, generator, parts_for(name, cfg.target_modules)))
        wrapped.append(name)
    if not wrapped:
        candidates = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if layer_dims(m) is not None})
        raise invalid_argument(
            f"no module matches LoRA target_modules {list(cfg.target_modules)}",
            candidates=",".join(candidates),
        )
    return wrapped


def canonical_name(name: str) -> str:
    """Parameter name as in the model without LoRA wrappers."""
    return name.replace(".base_layer.", ".")
