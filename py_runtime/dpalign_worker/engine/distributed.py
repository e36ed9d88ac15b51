"""Data parallelism over torch.distributed: N workers, one process group, one all-reduce per step.

The control plane (TS) is the single controller: it starts the workers, tells each its rank with
InitProcessGroupRequest, splits every Poisson batch across the ranks and checks what each reports.
Here the worker only joins the group and offers the collective the DP step needs: one SUM
all-reduce of ONE flattened buffer (the summed clipped gradients with this rank's example count at
the end), so a step costs one collective whatever the number of parameter tensors.

gloo runs on CPU tensors, nccl on CUDA tensors. Every collective inherits the group's finite
timeout: a rank that died makes the others fail with an error after `timeout_s`, never hang (the
control plane usually notices the dead process first, from its heartbeats).
"""
from __future__ import annotations

import datetime
import hashlib
import threading
from dataclasses import dataclass

import torch

from ..errors import invalid_argument

DEFAULT_TIMEOUT_S = 120.0
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class GroupInfo:
    rank: int
    world_size: int
    backend: str


_group: GroupInfo | None = None
# Collectives must be issued in the same order on every rank: one at a time per process.
_collective_lock = threading.Lock()


def init_group(rank: int, world_size: int, master_addr: str, master_port: int, backend: str,
               timeout_s: float, device: str) -> GroupInfo:
    """Joins the process group (blocks until all `world_size` ranks have joined, or `timeout_s`)."""
    global _group
    import torch.distributed as dist

    if world_size < 1 or not 0 <= rank < world_size:
        raise invalid_argument("init_process_group needs 0 <= rank < world_size", rank=rank, world_size=world_size)
    if not master_addr or not 0 < master_port < 65536:
        raise invalid_argument("init_process_group needs master_addr and a master_port in 1..65535",
                               master_addr=master_addr, master_port=master_port)
    backend = backend or ("nccl" if str(device).startswith("cuda") else "gloo")
    if backend not in BACKENDS:
        raise invalid_argument(f"unknown process-group backend {backend!r}", supported=",".join(BACKENDS))
    if backend == "nccl" and not torch.cuda.is_available():
        raise invalid_argument("backend nccl needs a CUDA device, and this worker sees none; use gloo")
    if timeout_s <= 0:
        timeout_s = DEFAULT_TIMEOUT_S
    if dist.is_initialized():
        # a control plane that restarts its group (a new run on the same workers) rejoins afresh
        dist.destroy_process_group()
        _group = None
    if backend == "nccl":
        # one GPU per worker: a local group gives each worker its own CUDA_VISIBLE_DEVICES
        torch.cuda.set_device(torch.device(device) if str(device).startswith("cuda:") else torch.cuda.current_device())
    dist.init_process_group(
        backend=backend, init_method=f"tcp://{master_addr}:{int(master_port)}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    _group = GroupInfo(rank, world_size, backend)
    return _group


def leave_group() -> None:
    """Leaves the process group, if any: a worker whose control plane ended its session (a worker
    started by hand serves the next one) must not reduce with the old ranks."""
    global _group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _group = None


def group() -> GroupInfo | None:
    """The process group this worker is in, or None (a lone worker: nothing to reduce)."""
    return _group if _group is not None and _group.world_size > 1 else None


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sums `tensors` over the ranks with ONE all-reduce of a flattened buffer (their common dtype,
    on their device); returns the reduced tensors in the input shapes. Every rank must call it with
    the same shapes in the same order."""
    import torch.distributed as dist

    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1) for t in tensors])
    with _collective_lock:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, at = [], 0
    for t in tensors:
        out.append(flat[at:at + t.numel()].view(t.shape))
        at += t.numel()
    return out


def trainable_sha256(m) -> str:
    """Digest of a model's trainable parameters and optimizer state (names, dtypes, shapes and
    bytes, in name order): equal digests mean the ranks hold the same model to the bit."""
    h = hashlib.sha256()

    def add(name: str, t: torch.Tensor) -> None:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    for name in sorted(m.trainable):
        add(f"param.{name}", m.trainable[name])
    if m.optimizer is not None:
        for name in sorted(m.optimizer.state):
            add(f"optim.{name}", m.optimizer.state[name])
    return h.hexdigest()
