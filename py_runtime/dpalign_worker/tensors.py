"""Tensor <-> protobuf: dtype and shape in the envelope, the raw little-endian bytes in a ZeroMQ
frame of their own (never repeated floats, never copied into the envelope).

A message on the wire is [envelope, frame 1, frame 2, ...]; a Tensor message names its frame by
index. The frames of the message being handled live in a `MessageFrames` scope that the server
opens around each handler (`message_frames`): `from_proto` / `batch_from_proto` read the request's
frames, `to_proto` / `fill_proto` / `batch_to_proto` append the reply's. Handlers therefore keep
working on plain messages. Outside any scope (handlers called directly, tests) both directions use
one table per thread, so `batch_from_proto(batch_to_proto(x))` still round-trips.

Copies: a received frame becomes a tensor without a copy (`torch.frombuffer` on the zmq frame's
memory, which the tensor keeps alive), unless its address is not a multiple of the item size (then
it is copied once). A CPU tensor is sent without a copy (its memory is handed to ZeroMQ), so a
tensor given to `to_proto` must not be modified until the reply has gone out; a tensor on another
device is copied to the CPU once.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import WorkerError, invalid_argument
from .protocol import worker_pb2 as pb

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}
_ITEMSIZE = {k: torch.empty((), dtype=v).element_size() for k, v in _TORCH_DTYPES.items()}

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("dpalign_worker needs a little-endian machine (the wire format is little-endian)")


class MessageFrames:
    """The frames of one multipart message, by index; index 0 is the envelope (never a tensor).

    `frames` holds whatever pyzmq returned or will send: zmq.Frame objects from a copy=False
    receive, bytes, memoryviews or numpy arrays."""

    def __init__(self, frames: Sequence[Any] = ()) -> None:
        self.frames: list[Any] = list(frames) if frames else [b""]

    def add(self, buffer: Any) -> int:
        """Appends a tensor's bytes (any C-contiguous buffer) and returns its frame index."""
        self.frames.append(buffer)
        return len(self.frames) - 1

    def payloads(self) -> list[Any]:
        """The frames after the envelope, in order: what follows the envelope on the wire."""
        return self.frames[1:]

    def buffer(self, index: int, name: str) -> memoryview:
        """The bytes of frame `index` as a flat byte view (no copy)."""
        if not 1 <= index < len(self.frames):
            raise WorkerError(
                pb.MALFORMED_REQUEST,
                f"{name}: refers to frame {index}, but the message has tensor frames 1..{len(self.frames) - 1}"
                if len(self.frames) > 1 else f"{name}: refers to frame {index}, but the message carries no tensor frames",
                tensor=name, frame=index, frames=len(self.frames),
            )
        f = self.frames[index]
        mv = memoryview(getattr(f, "buffer", f))  # a zmq.Frame exposes its memory as .buffer
        return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


_incoming: contextvars.ContextVar[MessageFrames | None] = contextvars.ContextVar("dpalign_incoming", default=None)
_outgoing: contextvars.ContextVar[MessageFrames | None] = contextvars.ContextVar("dpalign_outgoing", default=None)
_local = threading.local()


def _local_frames() -> MessageFrames:
    """The per-thread table used outside a message scope (direct handler calls, tests)."""
    t = getattr(_local, "frames", None)
    if t is None:
        t = _local.frames = MessageFrames()
    return t


@contextlib.contextmanager
def message_frames(incoming: MessageFrames, outgoing: MessageFrames) -> Iterator[MessageFrames]:
    """Within the block, tensors are decoded from `incoming` and encoded into `outgoing`."""
    tin, tout = _incoming.set(incoming), _outgoing.set(outgoing)
    try:
        yield outgoing
    finally:
        _incoming.reset(tin)
        _outgoing.reset(tout)


def fill_proto(out: pb.Tensor, t: torch.Tensor) -> pb.Tensor:
    """Writes a tensor (any device) into a Tensor message, its bytes into a new frame of the
    message being built (no copy for a contiguous CPU tensor)."""
    t = t.detach()
    if t.dtype not in _NAMES:
        raise invalid_argument(f"cannot send a tensor of dtype {t.dtype}", supported=",".join(_TORCH_DTYPES))
    cpu = t.to("cpu").contiguous()
    # bfloat16 has no numpy dtype: send its raw 16-bit pattern.
    raw = cpu.view(torch.int16) if cpu.dtype == torch.bfloat16 else cpu
    data: Any = raw.numpy().reshape(-1).view(np.uint8) if cpu.numel() else b""
    frames = _outgoing.get()
    if frames is None:  # no message being built: keep a copy, as the wire would
        frames, data = _local_frames(), bytearray(data)
    out.dtype = _NAMES[t.dtype]
    out.shape[:] = list(cpu.shape)
    out.frame = frames.add(data)
    return out


def to_proto(t: torch.Tensor) -> pb.Tensor:
    """Encodes a tensor (any device) as a Tensor message plus a frame."""
    return fill_proto(pb.Tensor(), t)


def from_proto(m: pb.Tensor, name: str = "tensor") -> torch.Tensor:
    """Decodes a Tensor message from its frame, checking that the byte count matches dtype and
    shape. The tensor shares the frame's memory unless the frame is misaligned for the dtype."""
    dtype = _TORCH_DTYPES.get(m.dtype)
    if dtype is None:
        raise invalid_argument(f"{name}: unknown dtype {m.dtype!r}", supported=",".join(_TORCH_DTYPES))
    shape = tuple(int(s) for s in m.shape)
    if any(s < 0 for s in shape):
        raise invalid_argument(f"{name}: negative dimension in shape {shape}")
    numel = int(np.prod(shape)) if shape else 1
    itemsize = _ITEMSIZE[m.dtype]
    frames = _incoming.get() or _local_frames()
    data = frames.buffer(int(m.frame), name)
    if data.nbytes != numel * itemsize:
        raise invalid_argument(
            f"{name}: frame {m.frame} has {data.nbytes} bytes, which do not match dtype {m.dtype} and shape "
            f"{list(shape)} ({numel * itemsize} bytes expected)",
            tensor=name, frame=m.frame, bytes=data.nbytes, expected=numel * itemsize,
        )
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    raw_dtype = torch.int16 if dtype == torch.bfloat16 else dtype
    # torch warns that the frame's memory is read-only: it is ZeroMQ's buffer for this message alone,
    # which nothing else reads or writes, and the tensor holds a reference that keeps it alive.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(data, dtype=torch.uint8)
        if flat.data_ptr() % itemsize:
            flat = flat.clone()  # a misaligned frame (small messages share ZeroMQ's read buffer)
        t = flat.view(raw_dtype)
    if dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t.reshape(shape)


def batch_to_proto(tensors: Mapping[str, torch.Tensor]) -> pb.TensorBatch:
    out = pb.TensorBatch()
    for k, v in tensors.items():
        fill_proto(out.tensors[k], v)
    return out


def batch_from_proto(m: pb.TensorBatch) -> dict[str, torch.Tensor]:
    return {k: from_proto(v, k) for k, v in m.tensors.items()}
