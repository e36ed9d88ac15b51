"""Lifecycle and diagnostic handlers: ping, shutdown, echo (handshake is the server's own)."""
from __future__ import annotations

import time

from ..errors import WorkerError
from ..protocol import worker_pb2 as pb
from ..registry import WorkerContext, handler
from ..tensors import batch_from_proto, fill_proto


@handler("handshake")
def handshake(req: pb.HandshakeRequest, ctx: WorkerContext) -> pb.HandshakeReply:
    # Answered by the server itself (it must record the peer); listed so capabilities name it.
    raise WorkerError(pb.INTERNAL, "handshake is handled by the server")


@handler("ping")
def ping(req: pb.PingRequest, ctx: WorkerContext) -> pb.PingReply:
    return pb.PingReply(worker_time_s=time.time())


@handler("shutdown")
def shutdown(req: pb.ShutdownRequest, ctx: WorkerContext) -> pb.ShutdownReply:
    return pb.ShutdownReply()


@handler("echo")
def echo(req: pb.EchoRequest, ctx: WorkerContext) -> pb.EchoReply:
    if req.sleep_ms:
        time.sleep(req.sleep_ms / 1000)
    if req.raise_error:
        raise WorkerError(pb.DEBUG_RAISED, req.raise_error)
    # Decode and re-encode so the round trip exercises the tensor codec on both sides: the decoded
    # tensors are views of the request's frames, and go back out as the reply's frames (no copy).
    out = pb.EchoReply(payload=req.payload)
    for name, t in batch_from_proto(req.batch).items():
        fill_proto(out.batch.tensors[name], t)
    return out
