"""Data-parallel handlers: join a torch.distributed process group, and a digest of a model's
trainable state so that the control plane can check that every rank holds the same model."""
from __future__ import annotations

from ..engine import distributed
from ..errors import WorkerError
from ..protocol import worker_pb2 as pb
from ..registry import WorkerContext, handler
from .engine import _model


@handler("init_process_group")
def init_process_group(req: pb.InitProcessGroupRequest, ctx: WorkerContext) -> pb.InitProcessGroupReply:
    try:
        g = distributed.init_group(int(req.rank), int(req.world_size), req.master_addr, int(req.master_port),
                                   req.backend, float(req.timeout_s), ctx.device)
    except WorkerError:
        raise
    except Exception as e:  # noqa: BLE001  a rendezvous timeout or refused address, said plainly
        raise WorkerError(pb.INTERNAL, f"rank {req.rank} could not join the process group at "
                                       f"{req.master_addr}:{req.master_port}: {e}") from e
    return pb.InitProcessGroupReply(rank=g.rank, world_size=g.world_size, backend=g.backend, device=ctx.device)


@handler("trainable_hash")
def trainable_hash(req: pb.TrainableHashRequest, ctx: WorkerContext) -> pb.TrainableHashReply:
    with ctx.model_lock(req.handle):
        m = _model(ctx, req.handle)
        return pb.TrainableHashReply(sha256=distributed.trainable_sha256(m), step=m.step)
