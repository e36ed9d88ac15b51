"""Clipped per-example gradient sums without per-example gradients of the whole model: one forward
and one backward with hooks ("book-keeping", Bu et al. 2023, with ghost norms, Li et al. 2022).

The forward records, for every module that owns a trainable parameter, its input activations; the
backward asks autograd only for the gradients of those modules' outputs (not for any weight
gradient). Every supported parameter's per-example gradient is then a sum over positions t of
outer products rows_t x cols_t (Linear: output gradient x input; Conv1D: the transpose;
Embedding: one-hot(token) x output gradient; LoRA's A and B: linear maps inside LoraLayer), or a
small per-example tensor that is cheap to materialise (biases, LayerNorm). Per example b:

  ||G_b||^2 = sum_{t,s} (rows_t . rows_s)(cols_t . cols_s)      ghost norm, cost ~ T^2 (R + C)
            = ||sum_t rows_t x cols_t||^2                        materialised, cost ~ T R C

whichever is cheaper for that parameter. All uses of a parameter (GPT-2's wte tied to lm_head)
are concatenated along t first, so the norm is that of the whole per-example gradient. With the
clip factors f_b from the total norm over all trainable parameters, the clipped sum is
sum_{b,t} (f_b rows_bt) x cols_bt: one matmul per layer, the same work as a non-private weight
gradient, written straight into the float32 accumulator.

`clipped_sum` returns None when the step cannot be done exactly this way (a trainable parameter
in a module it does not know, a parameter read outside its module's forward, an objective not
known to keep each example's loss to that example's rows, a layer that does not see the batch as
its first dimension); the caller then uses torch.func's per-example gradients (per_example.py),
which stay the reference.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .lora import LoraLayer
from .models import takes_position_ids

# Objectives whose example b reads only rows b*k .. b*k+k-1 of the forward (k sequences per
# example, example-major) and whose loss is a sum of per-example losses. dirac_canary reads the
# parameters directly, outside any layer; it always takes the torch.func path.
OBJECTIVES = frozenset({"causal_lm", "classification", "pairwise_reward", "ppo"})

_LOG = logging.getLogger("dpalign_worker.ghost_norms")
_STATE = "_dpalign_ghost"  # per-model cache, set with object.__setattr__ (not a submodule)


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D

        return Conv1D
    except Exception:  # pragma: no cover - transformers always has it
        return None


_CONV1D = _conv1d_type()


def _kind(m: nn.Module) -> str | None:
    """Exact types only: a subclass may change forward (quantised Linear, peft layers)."""
    t = type(m)
    if t is nn.Linear:
        return "linear"
    if _CONV1D is not None and t is _CONV1D:
        return "conv1d"
    if t is nn.Embedding and m.max_norm is None and not m.sparse and not m.scale_grad_by_freq:
        return "embedding"
    if t is nn.LayerNorm and m.elementwise_affine:
        return "layernorm"
    if t is LoraLayer:
        return "lora"
    return None


_ROLES = {"linear": {"weight", "bias"}, "conv1d": {"weight", "bias"}, "embedding": {"weight"},
          "layernorm": {"weight", "bias"}, "lora": {"lora_A", "lora_B"}}


@dataclass
class _Plan:
    ok: bool
    reason: str = ""
    modules: list[tuple[str, nn.Module, str]] = field(default_factory=list)  # (name, module, kind)
    owners: dict[int, set[int]] = field(default_factory=dict)  # id(param) -> ids of owning modules
    checked: set[str] = field(default_factory=set)  # objectives whose forward passed the usage check
    refused: dict[str, str] = field(default_factory=dict)  # objective -> why it falls back


def _plan(model: nn.Module, trainable: dict[str, torch.Tensor]) -> _Plan:
    key = tuple(id(p) for p in trainable.values())
    cached = model.__dict__.get(_STATE)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = _make_plan(model, trainable)
    if not plan.ok:
        _LOG.info("per-example norms by torch.func for this model: %s", plan.reason)
    object.__setattr__(model, _STATE, (key, plan))
    return plan


def _make_plan(model: nn.Module, trainable: dict[str, torch.Tensor]) -> _Plan:
    ids = {id(p): n for n, p in trainable.items()}
    owners: dict[int, set[int]] = {}
    modules = []
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            return _Plan(False, f"module {mname!r} mixes examples (batch statistics)")
        mine = [(role, p) for role, p in mod._parameters.items() if p is not None and id(p) in ids]
        if not mine:
            continue
        kind = _kind(mod)
        if kind is None:
            return _Plan(False, f"trainable {ids[id(mine[0][1])]!r} is in a {type(mod).__name__} ({mname!r})")
        bad = [role for role, _ in mine if role not in _ROLES[kind]]
        if bad:
            return _Plan(False, f"parameter {bad[0]!r} of {mname!r} is not a {kind} parameter")
        for _, p in mine:
            owners.setdefault(id(p), set()).add(id(mod))
        modules.append((mname, mod, kind))
    missing = [n for n, p in trainable.items() if id(p) not in owners]
    if missing:
        return _Plan(False, f"trainable {missing[0]!r} belongs to no module")
    return _Plan(True, modules=modules, owners=owners)


class _Unsupported(Exception):
    pass


class _ParamUse(TorchFunctionMode):
    """Flags a trainable parameter used by an op while the innermost running module is not one of
    its owners: its gradient would not pass through the hooked outputs."""

    def __init__(self, owners: dict[int, set[int]], stack: list[nn.Module]) -> None:
        super().__init__()
        self.owners, self.stack, self.bad = owners, stack, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "__get__" and not isinstance(out, torch.Tensor):
            return out  # metadata (dtype, shape, device)
        inner = id(self.stack[-1]) if self.stack else None
        for t in tree_leaves((args, kwargs or {})):
            if isinstance(t, torch.Tensor) and id(t) in self.owners and inner not in self.owners[id(t)]:
                self.bad = True
        return out


@dataclass
class _Call:
    kind: str
    module: nn.Module
    a: torch.Tensor                  # the module's input (token ids for an embedding)
    out: torch.Tensor | None         # its output, dropped once the gradient edge is taken
    edge: object = None
    u: torch.Tensor | None = None    # LoRA: the dropout's output (the input of A)


class _Recorder:
    def __init__(self, modules: list[tuple[str, nn.Module, str]]) -> None:
        self.calls: list[_Call] = []
        self.handles = []
        self.stack: list[nn.Module] = []
        self._lora_u: dict[int, torch.Tensor] = {}
        self.failed = ""
        for _, mod, kind in modules:
            self.handles.append(mod.register_forward_hook(self._hook(kind)))
            if kind == "lora":
                self.handles.append(mod.dropout.register_forward_hook(self._dropout_hook(mod)))

    def track_stack(self, model: nn.Module) -> None:
        def enter(mod):
            def hook(_m, _a):
                self.stack.append(mod)
            return hook

        def leave(_m, _a, _o):
            if self.stack:
                self.stack.pop()

        for mod in model.modules():
            self.handles.append(mod.register_forward_pre_hook(enter(mod)))
            self.handles.append(mod.register_forward_hook(leave))

    def _dropout_hook(self, lora: nn.Module):
        def hook(_m, _inp, out):
            self._lora_u[id(lora)] = out
        return hook

    def _hook(self, kind: str):
        def hook(mod, inp, out):
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                return None  # no gradient reaches this call's parameters through its output
            if len(inp) != 1 or not isinstance(inp[0], torch.Tensor):
                self.failed = f"a {kind} layer called with {len(inp)} positional inputs"
                return None
            a = inp[0]
            u = self._lora_u.pop(id(mod), None) if kind == "lora" else None
            self.calls.append(_Call(kind, mod, a, out, u=u))
            return None
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _forward(model: nn.Module, params: dict[str, torch.Tensor], rows: list[int], positions: bool):
    def fwd(input_ids: torch.Tensor, want: str = "logits", **kw) -> dict:
        rows.append(input_ids.shape[0])
        if positions and "position_ids" not in kw:
            # HF builds position ids [1, L] and broadcasts them: the position embedding would see
            # one row for the whole batch. Batched ids give it one row per sequence.
            n, length = input_ids.shape[:2]
            kw["position_ids"] = torch.arange(length, device=input_ids.device).unsqueeze(0).expand(n, length)
        return model(input_ids, want=want, **kw)

    fwd.params = params  # as per_example._forward_fn: objectives that read parameters find them
    return fwd


# -- per-parameter pieces ---------------------------------------------------------------------
@dataclass
class _Factored:
    """Per-example gradient sum_t rows[b, t] x cols[b, t] in the parameter's layout [R, C]; rows
    either dense [B, T, R] or token ids [B, T] (one-hot over R)."""
    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def ids(self) -> bool:
        return not self.rows.is_floating_point()


_LOW = (torch.bfloat16, torch.float16)


def _gram(x: torch.Tensor, y: torch.Tensor, dtype) -> torch.Tensor:
    """[B, Tx, Ty] inner products of x's and y's position vectors (ids are one-hot vectors)."""
    xi, yi = not x.is_floating_point(), not y.is_floating_point()
    if xi and yi:
        return (x.unsqueeze(2) == y.unsqueeze(1)).to(dtype)
    if xi:
        return y.to(dtype).gather(2, x.unsqueeze(1).expand(y.shape[0], y.shape[1], x.shape[1])).transpose(1, 2)
    if yi:
        return x.to(dtype).gather(2, y.unsqueeze(1).expand(x.shape[0], x.shape[1], y.shape[1]))
    if x.dtype == y.dtype and x.dtype in _LOW:
        # autocast activations: the matmul in their dtype (accumulating in float32 inside), its
        # entries in float32 from here on
        return torch.bmm(x, y.transpose(1, 2)).to(dtype)
    return torch.bmm(x.to(dtype), y.to(dtype).transpose(1, 2))


def _materialise(f: _Factored, shape: torch.Size, dtype) -> torch.Tensor:
    b = f.cols.shape[0]
    if f.ids:
        out = torch.zeros(b, shape[0], shape[1], dtype=dtype, device=f.cols.device)
        return out.scatter_add_(1, f.rows.unsqueeze(-1).expand(*f.rows.shape, shape[1]), f.cols.to(dtype))
    return torch.bmm(f.rows.to(dtype).transpose(1, 2), f.cols.to(dtype))


def _clipped(f: _Factored, factors: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """sum_b factors_b sum_t rows x cols, as one matmul (in the activations' dtype) or index_add."""
    cols = f.cols
    if f.ids:
        scaled = (cols * factors.view(-1, 1, 1)).reshape(-1, shape[1])
        out = torch.zeros(shape, dtype=scaled.dtype, device=scaled.device)
        return out.index_add_(0, f.rows.reshape(-1), scaled)
    rows = f.rows
    # At least float32: under bf16 autocast, rounding the factor-scaled side back to bf16 would
    # perturb each example's contribution by up to 2^-9 of the sum of |terms| over positions, which
    # after cancellation can exceed 2^-9 of its norm, so ||f_b G_b|| <= C would no longer hold. The
    # bf16 operands are exact in float32; only float32 accumulation rounding remains, as in any
    # float32 DP step.
    dtype = torch.promote_types(torch.promote_types(rows.dtype, cols.dtype), torch.float32)
    fac = factors.view(-1, 1, 1)
    if rows.shape[-1] <= cols.shape[-1]:  # scale the narrower side
        rows = (rows * fac).to(dtype)
    else:
        cols = (cols * fac).to(dtype)
    return rows.to(dtype).reshape(-1, shape[0]).t() @ cols.to(dtype).reshape(-1, shape[1])


class _Param:
    def __init__(self, p: torch.Tensor) -> None:
        self.p = p
        self.factored: list[_Factored] = []
        self.direct: list[torch.Tensor] = []   # per-example [B, *shape]
        self.kept: torch.Tensor | None = None  # materialised per-example gradient, when chosen

    def sq_norms(self, b: int, dtype) -> torch.Tensor:
        shape = self.p.shape
        if not self.factored and not self.direct:
            return torch.zeros(b, dtype=dtype, device=self.p.device)
        t = sum(f.cols.shape[1] for f in self.factored)
        ghost = bool(self.factored) and not self.direct and t * (shape[0] + shape[1]) < shape[0] * shape[1]
        if ghost:
            total = torch.zeros(b, dtype=dtype, device=self.p.device)
            fs = self.factored
            for i in range(len(fs)):
                for j in range(i, len(fs)):
                    s = (_gram(fs[i].rows, fs[j].rows, dtype) * _gram(fs[i].cols, fs[j].cols, dtype)).sum((1, 2))
                    total += s if i == j else 2 * s
            return total
        pe = None
        for f in self.factored:
            g = _materialise(f, shape, dtype)
            pe = g if pe is None else pe + g
        for d in self.direct:
            d = d.to(dtype)
            pe = d if pe is None else pe + d
        self.kept, self.factored = pe, []
        return pe.reshape(b, -1).pow(2).sum(1)

    def add_clipped_sum(self, acc: torch.Tensor, factors: torch.Tensor) -> None:
        if self.kept is not None:
            acc += torch.einsum("b,b...->...", factors.to(self.kept.dtype), self.kept).to(acc.dtype)
        for f in self.factored:
            acc += _clipped(f, factors, self.p.shape).to(acc.dtype)


def _by_example(x: torch.Tensor, b: int, rows: int) -> torch.Tensor:
    """[rows, ..., D] -> [b, rows/b * ..., D]: the k sequences of an example (example-major) and
    their positions as one position axis. Token ids [rows, L] -> [b, k L]."""
    if x.shape[0] != rows:
        raise _Unsupported(f"a layer sees {x.shape[0]} rows, the forward {rows}")
    if x.dim() == 1:
        return x.reshape(b, -1, 1)
    return x.reshape(b, -1, x.shape[-1]) if x.is_floating_point() else x.reshape(b, -1)


def _collect(calls: list[_Call], grads, b: int, rows: int, params: dict[int, _Param], dtype) -> None:
    def add(p: nn.Parameter | None, piece) -> None:
        if p is not None and id(p) in params:
            if isinstance(piece, _Factored):
                params[id(p)].factored.append(piece)
            else:
                params[id(p)].direct.append(piece)

    for c, g in zip(calls, grads):
        if g is None:
            continue  # the loss does not depend on this call
        mod = c.module
        g = _by_example(g, b, rows)
        if c.kind in ("linear", "conv1d"):
            a = _by_example(c.a, b, rows)
            add(mod.weight, _Factored(g, a) if c.kind == "linear" else _Factored(a, g))
            add(mod.bias, g.sum(1, dtype=dtype))
        elif c.kind == "embedding":
            ids = _by_example(c.a, b, rows)
            if mod.padding_idx is not None:  # the padding row gets no gradient
                g = g * (ids != mod.padding_idx).unsqueeze(-1).to(g.dtype)
            add(mod.weight, _Factored(ids, g))
        elif c.kind == "layernorm":
            x = _by_example(c.a, b, rows)
            if len(mod.normalized_shape) != 1:
                raise _Unsupported("LayerNorm over several dimensions")
            xhat = torch.nn.functional.layer_norm(x.to(dtype), mod.normalized_shape, eps=mod.eps)
            add(mod.weight, (g * xhat).sum(1, dtype=dtype))
            add(mod.bias, g.sum(1, dtype=dtype))
        elif c.kind == "lora":
            u = c.u if c.u is not None else c.a
            u = _by_example(u, b, rows)
            if mod.parts is not None:
                k = mod.chunk
                g = torch.cat([g[..., i * k:(i + 1) * k] for i in mod.parts], dim=-1)
            a_w, b_w = mod.lora_A, mod.lora_B
            h = (u.to(dtype) @ a_w.detach().to(dtype).t()) * mod.scale
            add(b_w, _Factored(g, h))
            add(a_w, _Factored((g.to(dtype) @ b_w.detach().to(dtype)) * mod.scale, u))


def clipped_sum(model: nn.Module, objective, batch: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor],
                loss_params, max_norm: float, acc: dict[str, torch.Tensor], autocast=None):
    """acc += sum_b clip_C(grad_b); returns (losses [B], norms [B], metrics), or None (with
    nothing written) when this step needs the torch.func path; see the module docstring."""
    plan = _plan(model, trainable)
    if not plan.ok or objective.name not in OBJECTIVES or objective.name in plan.refused:
        return None
    if objective.name not in plan.checked:
        reason = _verify(model, plan, objective, batch, trainable, loss_params)
        if reason:
            return _refuse(plan, objective, reason)
        plan.checked.add(objective.name)
    try:
        done = _norms(model, plan, objective, batch, trainable, loss_params, autocast)
    except _Unsupported as e:
        return None if e.args[0] == "rows" else _refuse(plan, objective, str(e))
    losses, metrics, params, norms = done
    with torch.no_grad():
        factors = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-30), torch.ones_like(norms))
        for name, p in trainable.items():
            params[id(p)].add_clipped_sum(acc[name], factors)
    return losses.detach(), norms, {k: v.detach() for k, v in metrics.items()}


def _refuse(plan: _Plan, objective, reason: str) -> None:
    plan.refused[objective.name] = reason
    _LOG.warning("per-example norms by torch.func for loss %s on this model: %s", objective.name, reason)
    return None


def _verify(model, plan, objective, batch, trainable, loss_params) -> str:
    """Once per model and objective, on (at most) two examples, dropout off, float32 or wider:
    every trainable parameter must be used only inside its own layer (an op-level check during
    the forward), and the norms must equal torch.func's. A model whose examples interact (a
    branch on batch data, batch statistics) fails here or in torch.func, never silently.
    Returns why the ghost path must not be used, or ""."""
    from .per_example import per_example_grads

    k = min(next(iter(batch.values())).shape[0], 2)
    small = {name: v[:k] for name, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        try:
            _, _, _, norms = _norms(model, plan, objective, small, trainable, loss_params, None, check=True)
        except _Unsupported as e:
            return str(e)
        grads, _, _ = per_example_grads(model, objective, small, trainable, loss_params)
    finally:
        model.train(was_training)
    ref = torch.stack([g.flatten(1).to(norms.dtype).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()
    if not torch.allclose(norms, ref, rtol=1e-4, atol=1e-6 * float(ref.max().clamp_min(1e-30))):
        return "its per-example norms differ from torch.func's on this model"
    return ""


def _norms(model, plan, objective, batch, trainable, loss_params, autocast, check: bool = False):
    """One forward and one backward: (losses, metrics, {id(param): _Param}, norms [B])."""
    b = next(iter(batch.values())).shape[0]
    rows: list[int] = []
    # batched position ids only matter to a trainable (hooked) position embedding
    positions = any(kind == "embedding" for _, _, kind in plan.modules) and takes_position_ids(model)
    fwd = _forward(model, trainable, rows, positions)
    rec = _Recorder(plan.modules)
    mode = None
    try:
        if check:
            rec.track_stack(model)
            mode = _ParamUse(plan.owners, rec.stack)
        with torch.enable_grad():
            if mode is not None:
                with mode:
                    losses, metrics = _compute(objective, fwd, batch, loss_params, autocast)
            else:
                losses, metrics = _compute(objective, fwd, batch, loss_params, autocast)
    finally:
        rec.close()
    if mode is not None and mode.bad:
        raise _Unsupported("a trainable parameter is used outside its layer's forward")
    if rec.failed:
        raise _Unsupported(rec.failed)
    if len(rows) != 1:
        raise _Unsupported(f"the objective ran {len(rows)} forwards, not one")
    if rows[0] % max(b, 1):
        raise _Unsupported("rows")  # this batch only
    calls = rec.calls
    for c in calls:
        c.edge = torch.autograd.graph.get_gradient_edge(c.out)
        c.out = None  # autograd keeps what it needs; holding outputs would keep them all alive
    grads = torch.autograd.grad(losses.sum(), [c.edge for c in calls], allow_unused=True) if calls else []
    pdtype = next(iter(trainable.values())).dtype
    dtype = torch.float64 if pdtype == torch.float64 else torch.float32
    params = {id(p): _Param(p) for p in trainable.values()}
    with torch.no_grad():
        _collect(calls, grads, b, rows[0], params, dtype)
        del calls, grads
        sq = torch.zeros(b, dtype=dtype, device=losses.device)
        for pp in params.values():
            sq += pp.sq_norms(b, dtype)
    return losses, metrics, params, sq.sqrt()


def _compute(objective, fwd, batch, loss_params, autocast):
    if autocast is None:
        return objective.compute(fwd, batch, loss_params)
    device = next(iter(batch.values())).device.type
    with torch.autocast(device, dtype=autocast):
        return objective.compute(fwd, batch, loss_params)


def fallback_reason(model: nn.Module, trainable: dict[str, torch.Tensor], objective_name: str) -> str:
    """Why a step of this model and objective takes the torch.func path ("" when it does not, as
    far as known before its first step)."""
    plan = _plan(model, trainable)
    if not plan.ok:
        return plan.reason
    if objective_name not in OBJECTIVES:
        return f"objective {objective_name!r} is not known to keep examples apart"
    return plan.refused.get(objective_name, "")
