"""Typed worker errors: every exception that leaves a handler becomes an Error reply with a code.

Raise `WorkerError(ErrorCode.X, "message that says how to fix it", key=value ...)` from handlers;
any other exception is reported as INTERNAL with its traceback in the details.
"""
from __future__ import annotations

from .protocol import worker_pb2 as pb


class WorkerError(Exception):
    def __init__(self, code: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = {k: str(v) for k, v in details.items()}

    def to_proto(self) -> pb.Error:
        return pb.Error(code=self.code, message=self.message, details=self.details)


def invalid_argument(message: str, **details: object) -> WorkerError:
    return WorkerError(pb.INVALID_ARGUMENT, message, **details)


def not_found(message: str, **details: object) -> WorkerError:
    return WorkerError(pb.NOT_FOUND, message, **details)


def unsupported_model(message: str, **details: object) -> WorkerError:
    return WorkerError(pb.UNSUPPORTED_MODEL, message, **details)


class CheckpointError(WorkerError):
    """A checkpoint that cannot be trusted or read: a file missing, truncated, corrupted or edited
    (its SHA-256 differs from the manifest's), an unreadable manifest, or an older format. The
    protocol has no dedicated code: NOT_FOUND when a file is missing, INVALID_ARGUMENT otherwise,
    with details reason=checkpoint_integrity and the file, so tools can tell these apart."""

    def __init__(self, code: int, message: str, *, file: str, **details: object) -> None:
        super().__init__(code, message, reason="checkpoint_integrity", file=file, **details)


def checkpoint_missing(message: str, *, file: str, **details: object) -> CheckpointError:
    return CheckpointError(pb.NOT_FOUND, message, file=file, **details)


def checkpoint_invalid(message: str, *, file: str, **details: object) -> CheckpointError:
    return CheckpointError(pb.INVALID_ARGUMENT, message, file=file, **details)
