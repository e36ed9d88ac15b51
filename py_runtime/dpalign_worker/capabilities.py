"""What this worker can do: interpreter, torch, devices, DP backends, optional packages."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

from .protocol import worker_pb2 as pb

OPTIONAL_PACKAGES = ("transformers", "peft", "tokenizers", "safetensors", "numpy", "opacus", "pyzmq", "protobuf")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def devices() -> list[str]:
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def default_device() -> str:
    ds = devices()
    return ds[1] if len(ds) > 1 else "cpu"


def backends() -> list[str]:
    out = ["builtin"]
    if importlib.util.find_spec("opacus") is not None:
        out.append("opacus")
    return out


def capabilities(device: str, methods: list[str]) -> pb.Capabilities:
    import torch

    packages = {name: v for name in OPTIONAL_PACKAGES if (v := _version(name)) is not None}
    return pb.Capabilities(
        python_version=platform.python_version(), torch_version=torch.__version__, device=device,
        devices=devices(), backends=backends(), methods=methods, packages=packages,
    )


def report() -> dict[str, object]:
    """A plain-dict summary for `dpalign doctor` (called in-process through pythonia)."""
    import sys

    from . import __version__
    from .protocol import worker_pb2

    info: dict[str, object] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "worker_version": __version__,
        "protocol_version": int(worker_pb2.PROTOCOL_VERSION_CURRENT),
        "backends": backends(),
        "packages": {name: _version(name) for name in OPTIONAL_PACKAGES},
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["devices"] = devices()
        info["device"] = default_device()
        info["torch_threads"] = torch.get_num_threads()
    except ImportError as e:
        info["torch"] = None
        info["torch_error"] = str(e)
    return info
