"""The Opacus backend: per-example gradients from Opacus' GradSampleModule, behind the same
interface as per_example.per_example_grads; clipping, noise, scaling and the optimizer step stay
the shared stages of dp_step, so replies are identical in form. Available only where `opacus` is
importable (it is not in the local package mirror; the built-in engine is the default).

Opacus computes per-sample gradients of modules whose inputs have the example as first dimension,
so objectives that fold several sequences into one forward (pairwise_reward stacks chosen and
rejected) are refused here; use the builtin backend for them.
"""
from __future__ import annotations

import torch

from ..errors import unsupported_model
from .per_example import _forward_fn


def available() -> bool:
    try:
        import opacus  # noqa: F401
    except ImportError:
        return False
    return True


def require_opacus() -> None:
    if not available():
        raise unsupported_model("backend 'opacus' needs the opacus package (pip install opacus); use 'builtin'")


_WRAPPED: dict[int, object] = {}


def per_example_grads(model, objective, batch, params, loss_params):
    from opacus import GradSampleModule

    # pairwise_reward folds two sequences into one forward; dirac_canary's gradient reaches the
    # parameters directly, not through a layer Opacus hooks, so it would silently get zero.
    if objective.name in ("pairwise_reward", "dirac_canary"):
        raise unsupported_model(f"the opacus backend does not support loss {objective.name}; use backend 'builtin'")
    gsm = _WRAPPED.get(id(model))
    if gsm is None:
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        _WRAPPED[id(model)] = gsm
    names = list(params)
    for p in params.values():
        p.grad_sample = None
        p.grad = None
    losses, metrics = objective.compute(_forward_fn(gsm, {}), batch, loss_params)
    losses.sum().backward()
    grads = {}
    for n in names:
        gs = params[n].grad_sample
        grads[n] = gs if gs is not None else torch.zeros(losses.shape[0], *params[n].shape, device=params[n].device)
        params[n].grad_sample = None
        params[n].grad = None
    return grads, losses.detach(), {k: v.detach() for k, v in metrics.items()}
