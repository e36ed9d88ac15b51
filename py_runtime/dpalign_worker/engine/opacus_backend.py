"""The Opacus backend: per-example gradients from Opacus' GradSampleModule (module hooks; Opacus
falls back to torch.func per layer for layers it has no grad sampler for, e.g. transformers'
Conv1D and dpalign's LoraLayer), behind the same interface as per_example.per_example_grads;
clipping, noise, scaling and the optimizer step stay the shared stages of dp_step, so replies are
identical in form. Available only where `opacus` is importable (`pip install opacus`; the test
environment installs it from ../shared/wheels when that folder exists); the built-in engine is the
default.

Opacus computes per-sample gradients of modules whose inputs have the example as first dimension,
so objectives that fold several sequences into one forward (pairwise_reward stacks chosen and
rejected) are refused here; use the builtin backend for them. Hugging Face models build position
ids of shape [1, L] (broadcast over the batch), which would give the position embedding one
"sample" for the whole batch; this backend passes position ids expanded to [B, L] instead.
Tied weights (GPT-2's wte and lm_head) get the sum of both layers' per-example gradients.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import unsupported_model
from .models import takes_position_ids
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


_ATTR = "_dpalign_opacus_gsm"  # set with object.__setattr__, so it is not registered as a submodule


def _wrapped(model):
    """The model's GradSampleModule, made once per model and kept on it (hooks off between calls)."""
    from opacus import GradSampleModule

    gsm = model.__dict__.get(_ATTR)
    if gsm is None:
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        gsm.disable_hooks()
        object.__setattr__(model, _ATTR, gsm)
    return gsm


def _batched_positions(fwd, takes_positions: bool):
    if not takes_positions:
        return fwd

    def call(input_ids: torch.Tensor, want: str = "logits") -> dict:
        b, length = input_ids.shape[:2]
        pos = torch.arange(length, device=input_ids.device).unsqueeze(0).expand(b, length)
        return fwd.model(input_ids, want=want, position_ids=pos)

    call.params = fwd.params
    return call


def per_example_grads(model, objective, batch, params, loss_params):
    # pairwise_reward folds two sequences into one forward; dirac_canary's gradient reaches the
    # parameters directly, not through a layer Opacus hooks, so it would silently get zero.
    if objective.name in ("pairwise_reward", "dirac_canary"):
        raise unsupported_model(f"the opacus backend does not support loss {objective.name}; use backend 'builtin'")
    gsm = _wrapped(model)
    for p in params.values():
        p.grad_sample = None
        p.grad = None
    fwd = _forward_fn(gsm, {})
    fwd.model = gsm
    fwd = _batched_positions(fwd, takes_position_ids(model))
    gsm.enable_hooks()
    try:
        losses, metrics = objective.compute(fwd, batch, loss_params)
        n = losses.shape[0]
        with warnings.catch_warnings():
            # the first hooked layer sees inputs that need no gradient (token ids): expected
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            losses.sum().backward()
    finally:
        gsm.disable_hooks()
    grads = {}
    for name, p in params.items():
        gs = p.grad_sample
        if isinstance(gs, list):  # one entry per backward accumulation; we run one backward
            gs = torch.stack(gs).sum(0)
        if gs is None:  # a parameter the loss does not reach
            gs = torch.zeros(n, *p.shape, device=p.device, dtype=p.dtype)
        if gs.shape[0] != n:
            raise unsupported_model(
                f"opacus gave parameter {name!r} per-sample gradients for {gs.shape[0]} examples, not {n}: "
                "a layer of the model sees inputs without the batch as first dimension; use backend 'builtin'",
                parameter=name,
            )
        grads[name] = gs
        p.grad_sample = None
        p.grad = None
        p._forward_counter = 0
    for mod in model.modules():  # activations of a forward whose backward did not reach the module
        if hasattr(mod, "activations"):
            mod.activations = []
    return grads, losses.detach(), {k: v.detach() for k, v in metrics.items()}
