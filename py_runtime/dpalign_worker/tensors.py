"""Tensor <-> protobuf: raw little-endian bytes with dtype and shape (never repeated floats)."""
from __future__ import annotations

import sys
import warnings
from typing import Mapping

import numpy as np
import torch

from .errors import invalid_argument
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

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("dpalign_worker needs a little-endian machine (the wire format is little-endian)")


def fill_proto(out: pb.Tensor, t: torch.Tensor) -> pb.Tensor:
    """Writes a tensor (any device) into a Tensor message in place (one copy fewer than CopyFrom)."""
    t = t.detach()
    if t.dtype not in _NAMES:
        raise invalid_argument(f"cannot send a tensor of dtype {t.dtype}", supported=",".join(_TORCH_DTYPES))
    cpu = t.to("cpu").contiguous()
    # bfloat16 has no numpy dtype: send its raw 16-bit pattern.
    raw = cpu.view(torch.int16) if cpu.dtype == torch.bfloat16 else cpu
    out.dtype = _NAMES[t.dtype]
    out.shape[:] = list(cpu.shape)
    out.data = raw.numpy().tobytes() if cpu.numel() else b""
    return out


def to_proto(t: torch.Tensor) -> pb.Tensor:
    """Encodes a tensor (any device) as a Tensor message."""
    return fill_proto(pb.Tensor(), t)


def from_proto(m: pb.Tensor, name: str = "tensor") -> torch.Tensor:
    """Decodes a Tensor message, checking that the byte count matches dtype and shape."""
    dtype = _TORCH_DTYPES.get(m.dtype)
    if dtype is None:
        raise invalid_argument(f"{name}: unknown dtype {m.dtype!r}", supported=",".join(_TORCH_DTYPES))
    shape = tuple(int(s) for s in m.shape)
    if any(s < 0 for s in shape):
        raise invalid_argument(f"{name}: negative dimension in shape {shape}")
    numel = int(np.prod(shape)) if shape else 1
    itemsize = torch.empty((), dtype=dtype).element_size()
    data = m.data  # each access copies the bytes out of the message: read it once
    if len(data) != numel * itemsize:
        raise invalid_argument(
            f"{name}: {len(data)} bytes do not match dtype {m.dtype} and shape {list(shape)} "
            f"({numel * itemsize} bytes expected)"
        )
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    # `data` is a fresh bytes object that nothing else references, so the tensor may own
    # its memory without another copy (torch warns because bytes are nominally immutable).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if dtype == torch.bfloat16:
            return torch.frombuffer(data, dtype=torch.int16).view(torch.bfloat16).reshape(shape)
        return torch.frombuffer(data, dtype=dtype).reshape(shape)


def batch_to_proto(tensors: Mapping[str, torch.Tensor]) -> pb.TensorBatch:
    out = pb.TensorBatch()
    for k, v in tensors.items():
        fill_proto(out.tensors[k], v)
    return out


def batch_from_proto(m: pb.TensorBatch) -> dict[str, torch.Tensor]:
    return {k: from_proto(v, k) for k, v in m.tensors.items()}
