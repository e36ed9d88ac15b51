"""Handlers registered by request method name (the field name of Request.method's oneof).

A handler takes the method's request message and the worker context and returns the reply
message for that method (the matching field of Reply.result). Handlers run on a thread pool;
those that read or change a model take `ctx.model_lock(handle)`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from google.protobuf.message import Message

HandlerFn = Callable[[Any, "WorkerContext"], Message]
HANDLERS: dict[str, HandlerFn] = {}


def handler(method: str) -> Callable[[HandlerFn], HandlerFn]:
    def register(fn: HandlerFn) -> HandlerFn:
        if method in HANDLERS:
            raise RuntimeError(f"two handlers for method {method!r}")
        HANDLERS[method] = fn
        return fn

    return register


@dataclass
class WorkerContext:
    """State shared by handlers: loaded models by handle, and a lock per handle."""

    device: str = "cpu"
    models: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, threading.RLock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def model_lock(self, handle: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(handle, threading.RLock())
