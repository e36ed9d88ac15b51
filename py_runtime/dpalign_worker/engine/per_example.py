"""Per-example gradients for any PyTorch model through torch.func (functional_call, vmap, grad),
restricted to the trainable parameters. Where a model cannot be vectorised (data-dependent
control flow, in-place ops on batched tensors, unsupported ops), the error names the module.

The builtin backend's DP step takes per-example norms from ghost_norms.py where that is exact;
this module is its fallback for every other model and objective, and the reference its tests and
its first-step check compare against."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import WorkerError, unsupported_model
from .objectives import LossParams, Objective


def _forward_fn(model: nn.Module, params: dict[str, torch.Tensor]):
    def fwd(input_ids: torch.Tensor, want: str = "logits") -> dict:
        return functional_call(model, params, (input_ids,), {"want": want}, strict=False)

    # Objectives that act on the trainable parameters themselves (dirac_canary, for privacy audits)
    # read them here, in the order of LoadedModel.trainable: the functional ones under torch.func,
    # else the module's own.
    fwd.params = params or {n: p for n, p in model.named_parameters() if p.requires_grad}
    return fwd


def per_example_grads(
    model: nn.Module,
    objective: Objective,
    batch: dict[str, torch.Tensor],
    params: dict[str, torch.Tensor],
    loss_params: "LossParams | None",
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Returns ({name: grad [B, *shape]}, losses [B], metrics {name: [B]}) for one micro-batch."""
    detached = {n: p.detach() for n, p in params.items()}

    def one(ps: dict, example: dict):
        ex = {k: v.unsqueeze(0) for k, v in example.items()}
        loss, metrics = objective.compute(_forward_fn(model, ps), ex, loss_params)
        return loss[0], (loss[0].detach(), {k: v[0] for k, v in metrics.items()})

    fn = vmap(grad(one, has_aux=True), in_dims=(None, 0), randomness="different")
    try:
        grads, (losses, metrics) = fn(detached, batch)
    except WorkerError:
        raise
    except Exception as exc:  # find which module cannot run under vmap
        if not _looks_like_vmap_error(exc):
            raise
        culprit = locate_failing_module(model, lambda: fn(detached, batch))
        raise unsupported_model(
            f"per-example gradients cannot vectorise module {culprit or '<model>'!r} with torch.func.vmap: "
            f"{type(exc).__name__}: {exc}. Rewrite it without data-dependent Python control flow or in-place "
            "updates of batched tensors, or train it without DP.",
            module=culprit or "<model>",
            module_type=type(model.get_submodule(culprit)).__name__ if culprit else type(model).__name__,
        ) from exc
    return grads, losses, metrics


def _looks_like_vmap_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("vmap", "batched", "data-dependent", "functorch", "batching rule"))


@contextmanager
def _module_stack(model: nn.Module) -> Iterator[list[str]]:
    stack: list[str] = []
    handles = []

    def enter(name: str):
        def hook(_m, _a) -> None:
            stack.append(name)
        return hook

    def leave(_m, _a, _o) -> None:  # must return None: a forward hook's return value replaces the output
        if stack:
            stack.pop()

    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(enter(name)))
        handles.append(mod.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def locate_failing_module(model: nn.Module, run) -> str | None:
    """Reruns `run` with hooks tracking the module being executed; returns the innermost module
    whose forward raised, or None when the failure is outside module forwards (or does not recur)."""
    with _module_stack(model) as stack:
        try:
            run()
        except Exception:
            return stack[-1] if stack else None
    return None
