"""One training step as named stages (Opacus' DPOptimizer, as functions):

  per_example_gradients -> clip_per_example (whole gradient, all trainable tensors, to norm C)
  -> accumulate (sum over physical micro-batches) -> add_noise (std sigma*C, once per logical step;
     from a CSPRNG in secure mode, see noise.py)
  -> scale (divide by the expected batch size q*N, not the realised size) -> optimizer step.

The control plane chooses the examples and every DP parameter; `train_step` executes exactly that
and returns a StepReport of what it did. Non-private mode (dp.enabled = false) runs the same
objective with ordinary mini-batch gradients (mean over the realised batch, optional clipping of
the batch gradient, no noise).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from ..errors import invalid_argument
from . import distributed, ghost_norms
from .batch import batch_size, micro_batches
from .models import LoadedModel
from .noise import NoiseSource, noise_source
from .objectives import LossParams, check_loss_params, get_objective
from .per_example import _forward_fn, per_example_grads


@dataclass
class DpConfig:
    enabled: bool = False
    noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0
    expected_batch_size: float = 0.0
    secure_noise: bool = True
    noise_seed: int = 0

    def validate(self) -> None:
        for k in ("noise_multiplier", "max_grad_norm", "expected_batch_size"):
            v = getattr(self, k)
            if not math.isfinite(v) or v < 0:
                raise invalid_argument(f"dp.{k} must be a finite number >= 0", value=v)
        if self.enabled and self.max_grad_norm <= 0:
            raise invalid_argument("a private step needs dp.max_grad_norm (C) > 0")
        if self.enabled and self.expected_batch_size <= 0:
            raise invalid_argument("a private step needs dp.expected_batch_size (q * N) > 0")


@dataclass
class StepReport:
    step: int
    examples: int
    loss: float
    grad_norm_quantiles: list[float]
    fraction_clipped: float
    noise_multiplier: float
    max_grad_norm: float
    dp: bool
    noise_mode: str
    noise_seed: int
    noise_std: float
    metrics: dict[str, float] = field(default_factory=dict)
    # data parallelism (engine/distributed.py): `examples` is then the whole logical batch, the
    # statistics above this rank's own
    rank_examples: int = 0
    added_noise: bool = False
    rank: int = 0
    world_size: int = 1


# -- stages ----------------------------------------------------------------------------------------
def clip_per_example(grads: dict[str, torch.Tensor], max_norm: float):
    """Scales each example's whole gradient (all tensors together) to norm <= C.
    Returns (clip factors [B], norms [B]); examples with norm <= C keep factor exactly 1."""
    norms = per_example_norms(grads)
    factors = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-30), torch.ones_like(norms))
    return factors, norms


def per_example_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    sq = [g.flatten(1).float().pow(2).sum(1) for g in grads.values()]
    return torch.stack(sq, 0).sum(0).sqrt()


def accumulate(acc: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], factors: torch.Tensor) -> None:
    """acc += sum_i factor_i * grad_i (clipped per-example gradients summed in acc's dtype)."""
    for n, g in grads.items():
        dt = acc[n].dtype  # float32, or float64 for a float64 model (train_step decides)
        acc[n] += torch.einsum("b,b...->...", factors.to(dt), g.to(dt))


def add_noise(acc: dict[str, torch.Tensor], std: float, source: NoiseSource) -> None:
    """Adds N(0, std^2) independently to every coordinate of the summed gradient, once per step.
    The source decides where the randomness comes from (engine/noise.py: secure or seeded)."""
    if std <= 0:
        return
    tensors = list(acc.values())
    same = len({(g.dtype, g.device) for g in tensors}) == 1
    if source.mode == "secure" and len(tensors) > 1 and same:
        # One draw for all tensors: i.i.d. normals either way, but the per-draw overhead (~50 small
        # float64 ops of Box-Muller and a keystream call) paid once per tensor was most of the LoRA
        # step's gap to Opacus at two threads (README, issue 10's profile). Seeded mode
        # keeps its per-tensor draws so seeded runs repeat what earlier versions drew.
        flat = source.gaussian((sum(g.numel() for g in tensors),), std, tensors[0].dtype, tensors[0].device)
        offset = 0
        for g in tensors:
            g.add_(flat[offset:offset + g.numel()].view(g.shape))
            offset += g.numel()
        return
    for g in tensors:
        g.add_(source.gaussian(g.shape, std, g.dtype, g.device))


def scale(acc: dict[str, torch.Tensor], divisor: float) -> None:
    for g in acc.values():
        g.div_(divisor)


def quantiles(x: torch.Tensor) -> list[float]:
    if x.numel() == 0:
        return [0.0] * 5
    return [float(v) for v in torch.quantile(x.double(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))]


# -- the step ------------------------------------------------------------------------------------
def train_step(m: LoadedModel, loss: str, raw_batch: dict[str, torch.Tensor], dp: DpConfig,
               micro_batch_size: int = 0, lr: float = 0.0, loss_params: LossParams | None = None) -> StepReport:
    if m.optimizer is None:
        raise invalid_argument(f"model {m.handle!r} was loaded without an optimizer; it cannot be trained")
    if not math.isfinite(lr) or lr < 0:
        raise invalid_argument("lr must be a finite number >= 0", lr=lr)
    dp.validate()
    objective = get_objective(loss)
    params_cfg = check_loss_params(loss, loss_params)
    # an empty logical batch may come as a TensorBatch without tensors: a valid (noise-only) step
    prepared = objective.prepare(raw_batch, m.pad_id) if raw_batch else {}
    batch = {k: v.to(m.device) for k, v in prepared.items()}
    n = batch_size(batch)
    lr = lr or m.optimizer.lr
    # float64 models keep float64 sums, so that how a batch is split over ranks changes the result
    # only by float64 rounding
    acc_dtype = torch.float64 if any(p.dtype == torch.float64 for p in m.trainable.values()) else torch.float32
    acc = {k: torch.zeros_like(p, dtype=acc_dtype) for k, p in m.trainable.items()}
    group = distributed.group()
    n_local, added = n, False
    m.model.train()
    if dp.enabled:
        losses, norms, metrics, clipped = _private_grads(m, objective, batch, dp, micro_batch_size, params_cfg, acc)
        std = dp.noise_multiplier * dp.max_grad_norm
        if std > 0:
            mode, seed = ("secure", 0) if dp.secure_noise else ("seeded", int(dp.noise_seed))
            # noise once per logical step: in a process group only rank 0 draws it, before the
            # all-reduce, so every rank receives (sum of clipped gradients + z)
            if group is None or group.rank == 0:
                # one source per step: in secure mode a fresh key, in seeded mode the (seed, step) stream
                source = noise_source(dp.secure_noise, dp.noise_seed, m.step, m.device)
                add_noise(acc, std, source)
                mode, seed, added = source.mode, source.seed, True
        else:
            mode, seed = "none", 0
        if group is not None:
            n = _all_reduce_grads(acc, n_local)
        scale(acc, dp.expected_batch_size)
        frac = float(clipped.float().mean()) if n_local else 0.0
        q = quantiles(norms)
    else:
        losses, metrics, total_norm = _nonprivate_grads(m, objective, batch, micro_batch_size, params_cfg, acc)
        if group is not None:
            # the mean over the whole batch: local mean -> local sum -> global sum / global count
            if n_local:
                scale(acc, 1.0 / n_local)
            n = _all_reduce_grads(acc, n_local)
            if n:
                scale(acc, float(n))
            total_norm = float(torch.sqrt(sum(g.double().pow(2).sum() for g in acc.values()))) if acc else 0.0
        was_clipped = dp.max_grad_norm > 0 and total_norm > dp.max_grad_norm
        if was_clipped:
            scale(acc, total_norm / dp.max_grad_norm)
        mode, seed, std, frac = "none", 0, 0.0, float(was_clipped)
        q = [total_norm] * 5  # no per-example norms without DP: the batch gradient's norm, five times
        metrics["batch_grad_norm"] = torch.tensor([total_norm])
    m.optimizer.step(acc, lr)
    m.step += 1
    return StepReport(
        step=m.step, examples=n, loss=float(losses.mean()) if n_local else 0.0, grad_norm_quantiles=q,
        fraction_clipped=frac, noise_multiplier=dp.noise_multiplier if dp.enabled else 0.0,
        max_grad_norm=dp.max_grad_norm, dp=dp.enabled, noise_mode=mode, noise_seed=seed, noise_std=std,
        metrics={k: float(v.float().mean()) if v.numel() else 0.0 for k, v in metrics.items()},
        rank_examples=n_local, added_noise=added, rank=group.rank if group else 0,
        world_size=group.world_size if group else 1,
    )


def _all_reduce_grads(acc: dict[str, torch.Tensor], n_local: int) -> int:
    """Sums `acc` (in place) and the example counts over the process group in one all-reduce;
    returns the global count."""
    names = list(acc)
    ref = acc[names[0]]
    count = torch.tensor([float(n_local)], dtype=ref.dtype, device=ref.device)
    reduced = distributed.all_reduce_sum([acc[k] for k in names] + [count])
    for k, t in zip(names, reduced):
        acc[k] = t
    return int(round(float(reduced[-1])))


def _gather_metrics(chunks: list[dict]) -> dict[str, torch.Tensor]:
    keys = chunks[0].keys() if chunks else []
    return {k: torch.cat([c[k].reshape(-1).float().cpu() for c in chunks]) for k in keys}


def _private_grads(m, objective, batch, dp, micro, loss_params, acc):
    if m.backend == "opacus":
        from .opacus_backend import per_example_grads as pe_fn
    else:
        pe_fn = per_example_grads
    # builtin: book-keeping with ghost norms (ghost_norms.py) where exact, else torch.func's
    # per-example gradients, per micro-batch; m.per_example = "vmap" forces the latter
    ghost = m.backend != "opacus" and m.per_example != "vmap"
    all_losses, all_norms, all_clipped, all_metrics = [], [], [], []
    for mb in micro_batches(batch, micro):
        done = (ghost_norms.clipped_sum(m.model, objective, mb, m.trainable, loss_params, dp.max_grad_norm, acc,
                                        m.autocast) if ghost else None)
        if done is not None:
            losses, norms, metrics = done
            all_losses.append(losses.float().cpu())
            all_norms.append(norms.cpu())
            all_clipped.append((norms > dp.max_grad_norm).cpu())
            all_metrics.append(metrics)
            continue
        with _autocast(m):
            grads, losses, metrics = pe_fn(m.model, objective, mb, m.trainable, loss_params)
        factors, norms = clip_per_example(grads, dp.max_grad_norm)
        accumulate(acc, grads, factors)
        all_losses.append(losses.detach().float().cpu())
        all_norms.append(norms.detach().cpu())
        all_clipped.append((norms > dp.max_grad_norm).cpu())
        all_metrics.append(metrics)
        del grads
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
    return cat(all_losses), cat(all_norms), _gather_metrics(all_metrics), cat(all_clipped)


def _autocast(m):
    """bf16 autocast of the forward (LoadedModel.autocast, ModelSpec dtype "autocast_bfloat16"):
    weights, accumulator and noise stay float32."""
    if m.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(m.device.type, dtype=m.autocast)


def _nonprivate_grads(m, objective, batch, micro, loss_params, acc):
    n = batch_size(batch)
    names = list(m.trainable)
    params = [m.trainable[k] for k in names]
    fwd = _forward_fn(m.model, {})
    all_losses, all_metrics = [], []
    for mb in micro_batches(batch, micro):
        with _autocast(m):
            losses, metrics = objective.compute(fwd, mb, loss_params)
        grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
        for k, g in zip(names, grads):
            if g is not None:
                acc[k] += g.to(acc[k].dtype)
        all_losses.append(losses.detach().float().cpu())
        all_metrics.append({k: v.detach() for k, v in metrics.items()})
    if n:
        scale(acc, float(n))
    total = float(torch.sqrt(sum(g.pow(2).sum() for g in acc.values()))) if acc else 0.0
    return (torch.cat(all_losses) if all_losses else torch.zeros(0)), _gather_metrics(all_metrics), total
