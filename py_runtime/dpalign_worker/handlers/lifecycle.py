"""Lifecycle and diagnostic handlers: ping, shutdown, echo, probe_path (handshake is the server's own)."""
from __future__ import annotations

import os
import socket
import time

from ..errors import WorkerError, invalid_argument
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


PROBE_PREFIX = ".dpalign-probe-"


@handler("probe_path")
def probe_path(req: pb.ProbePathRequest, ctx: WorkerContext) -> pb.ProbePathReply:
    """The shared-filesystem check: read back the control plane's probe file, write one for it.
    Only probe files: an authenticated control plane must not get a general file reader from it."""
    for field, path in (("path", req.path), ("answer_path", req.answer_path)):
        if field == "answer_path" and not path:
            continue
        if not os.path.isabs(path) or not os.path.basename(path).startswith(PROBE_PREFIX):
            raise invalid_argument(f"probe_path: {field} must be an absolute path to a {PROBE_PREFIX}* file, not {path!r}")
    out = pb.ProbePathReply(hostname=socket.gethostname())
    try:
        with open(req.path, "rb") as f:
            content = f.read(len(req.expected) + 1)
        out.found = True
        out.matches = content == req.expected
        if not out.matches:
            out.error = "the file there holds other content"
    except OSError as e:
        out.error = f"{type(e).__name__}: {e.strerror or e}"
    if req.answer_path:
        try:
            fd = os.open(req.answer_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, req.answer)
            finally:
                os.close(fd)
            out.answered = True
        except OSError as e:
            out.answer_error = f"{type(e).__name__}: {e.strerror or e}"
    return out
