"""The worker's ZeroMQ server: a ROUTER socket, a thread pool for requests, heartbeats.

One I/O thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe). Requests are decoded
there; quick lifecycle methods answer inline, everything else runs on a thread pool whose threads
hand finished replies back over inproc PUSH sockets. Every exception becomes a typed Error reply;
bytes that do not parse produce a MALFORMED_REQUEST reply (or a logged drop) and never stop the
worker.

A message is [identity, envelope, tensor frame 1, ...] (see tensors.py). Frames are received with
copy=False and sent with copy=False, so a tensor's bytes are never copied by the worker: the
request tensors a handler sees are views of the received frames, the tensors it returns are handed
to ZeroMQ as they are, and the inproc hop from a pool thread to the I/O thread passes frames by
reference.
"""
from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import zmq
from google.protobuf.message import DecodeError, Message

from . import __version__
from .errors import WorkerError
from .protocol import worker_pb2 as pb
from .registry import HANDLERS, WorkerContext
from .security import CurveConfig, enable_curve_server, is_loopback_endpoint
from .tensors import MessageFrames, message_frames


class InsecureEndpointError(RuntimeError):
    pass


@dataclass
class Session:
    """The one control plane this worker serves: named by the handshake's session_id, reached at
    the ZeroMQ routing id it last wrote from."""

    id: str
    peer: bytes
    client: str
    timeout_s: float  # 0: silence alone never ends it
    started: float
    last_seen: float
    detached: bool = False  # its connection is gone (a send to it found no route)

    def live(self, now: float) -> bool:
        return not self.detached and (self.timeout_s == 0 or now - self.last_seen <= self.timeout_s)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


_RESULT_TAGS = {f.name: _varint((f.number << 3) | 2) for f in pb.Reply.DESCRIPTOR.oneofs_by_name["result"].fields}


def encode_result(request_id: int, method: str, result: Message, handler_s: float = 0.0) -> bytes:
    """Serializes Reply(id, <method>=result) without copying `result` into a Reply first: a
    message field on the wire is its tag, its length and its bytes, and protobuf allows fields in
    any order, so the envelope's bytes and the result's bytes can simply be joined."""
    body = result.SerializeToString()
    return pb.Reply(id=request_id, handler_s=handler_s).SerializeToString() + _RESULT_TAGS[method] + _varint(len(body)) + body

log = logging.getLogger("dpalign_worker")

PROTOCOL_VERSION = pb.PROTOCOL_VERSION_CURRENT
DEFAULT_HEARTBEAT_MS = 1000
# Methods answered on the I/O thread: cheap, and they must not queue behind long training steps.
INLINE_METHODS = frozenset({"handshake", "ping", "shutdown"})


class WorkerServer:
    def __init__(
        self, endpoint: str, *, threads: int = 4, parent_pid: int | None = None,
        context: WorkerContext | None = None, curve: CurveConfig | None = None,
    ) -> None:
        from . import handlers  # noqa: F401  registers every handler

        if curve is None and not is_loopback_endpoint(endpoint):
            raise InsecureEndpointError(
                f"refusing to serve {endpoint} without CurveZMQ: a worker reachable from other machines must "
                "authenticate its control plane. Create keys with `dpalign worker keygen --out DIR` and pass --keys DIR"
            )
        self.endpoint = endpoint
        self.parent_pid = parent_pid
        self.ctx = context or WorkerContext()
        self.zmq = zmq.Context.instance()
        self.router = self.zmq.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 500)
        # A send to a peer whose connection is gone raises EHOSTUNREACH instead of vanishing: that is
        # how the end of a control plane's session is noticed. With no high-water mark a send never
        # blocks (nor drops a reply, as a full pipe used to); the client reads without limit too.
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, 0)
        # A client that reconnects under its routing id (the TS client uses its session id) takes
        # its old connection over, which may not have been noticed as closed yet.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._auth = enable_curve_server(self.zmq, self.router, curve) if curve is not None else None
        self.router.bind(endpoint)
        self._ipc_path = _ipc_path(self.router.getsockopt_string(zmq.LAST_ENDPOINT))
        self._closed = False
        self.results_addr = f"inproc://dpalign-results-{id(self)}"
        self.results = self.zmq.socket(zmq.PULL)
        self.results.bind(self.results_addr)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dpalign-req")
        self._local = threading.local()
        self._push_sockets: list[zmq.Socket] = []
        self._push_lock = threading.Lock()
        self.peer: bytes | None = None  # where heartbeats go: the session's routing id
        self.session: Session | None = None
        self.hostname = socket.gethostname()
        self.heartbeat_ms = DEFAULT_HEARTBEAT_MS
        self.heartbeat_seq = 0
        self.in_flight = 0
        self.started = time.monotonic()
        self.stopping = False
        self.interrupted = False  # set by interrupt(): leave the loop now, in-flight work or not

    # -- replies from pool threads -------------------------------------------------------------
    def _push(self) -> zmq.Socket:
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self.zmq.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.results_addr)
            self._local.push = sock
            with self._push_lock:
                self._push_sockets.append(sock)
        return sock

    def _run_handler(self, identity: bytes, request_id: int, method: str, body: Message, frames: MessageFrames) -> None:
        self._push().send_multipart([identity, *self._execute(request_id, method, body, frames)], copy=False)

    def _execute(self, request_id: int, method: str, body: Message, frames: MessageFrames) -> list:
        """Runs a handler and returns the reply's frames: the serialized Reply (result or typed
        error) and, after a result, the frames of the tensors in it."""
        fn = HANDLERS.get(method)
        if fn is None:
            err = WorkerError(pb.UNKNOWN_METHOD, f"this worker does not implement {method!r}", supported=",".join(sorted(HANDLERS)))
            return [pb.Reply(id=request_id, error=err.to_proto()).SerializeToString()]
        try:
            with message_frames(frames, MessageFrames()) as out:
                t0 = time.perf_counter()
                result = fn(body, self.ctx)
                handler_s = time.perf_counter() - t0
                return [encode_result(request_id, method, result, handler_s), *out.payloads()]
        except WorkerError as e:
            error = e.to_proto()
        except MemoryError as e:
            error = pb.Error(code=pb.RESOURCE_EXHAUSTED, message=f"out of memory in {method}: {e}")
        except Exception as e:  # every other failure still answers, with the traceback for tools
            log.exception("request %d (%s) failed", request_id, method)
            code = pb.RESOURCE_EXHAUSTED if "out of memory" in str(e).lower() else pb.INTERNAL
            error = pb.Error(code=code, message=f"{type(e).__name__} in {method}: {e}", details={"traceback": traceback.format_exc()})
        return [pb.Reply(id=request_id, error=error).SerializeToString()]

    # -- the I/O loop ----------------------------------------------------------------------------
    def _route(self, frames: list, copy: bool = True) -> bool:
        """Sends [identity, ...]; False when the peer is gone (its reply is dropped)."""
        try:
            self.router.send_multipart(frames, copy=copy)
            return True
        except zmq.ZMQError as e:
            if e.errno != errno.EHOSTUNREACH:
                raise
            identity = frames[0] if isinstance(frames[0], bytes) else frames[0].bytes
            s = self.session
            if s is not None and identity == s.peer and not s.detached:
                s.detached = True
                log.info("the control plane of session %s (%s) disconnected; the next one may take this worker over", s.id[:8], s.client)
            return False

    def _send(self, identity: bytes, reply: pb.Reply) -> None:
        self._route([identity, reply.SerializeToString()])

    def _error(self, identity: bytes, request_id: int, code: int, message: str, **details: str) -> None:
        self._send(identity, pb.Reply(id=request_id, error=pb.Error(code=code, message=message, details=details)))

    def _on_request(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            log.warning("dropped a message with %d frame(s): expected [identity, request, tensors...]", len(frames))
            return
        identity, payload = frames[0].bytes, frames[1].bytes
        now = time.monotonic()
        session = self.session
        if session is not None and identity == session.peer:
            session.last_seen, session.detached = now, False
        req = pb.Request()
        try:
            req.ParseFromString(payload)
        except (DecodeError, ValueError) as e:
            log.warning("malformed request (%d bytes): %s", len(payload), e)
            self._error(identity, 0, pb.MALFORMED_REQUEST, f"request bytes do not parse as dpalign.worker.v1.Request: {e}")
            return
        method = req.WhichOneof("method")
        if method is None:
            self._error(
                identity, req.id, pb.UNKNOWN_METHOD,
                "request names no method this worker knows (a newer client?)", supported=",".join(sorted(HANDLERS)),
            )
            return
        body = getattr(req, method)
        if self.stopping:
            self._error(identity, req.id, pb.SHUTTING_DOWN, "the worker is shutting down")
            return
        if method == "handshake":
            self._handshake(identity, req.id, body)
            return
        if method == "shutdown" and body.end_session:
            reply = self._execute(req.id, method, body, MessageFrames(frames[1:]))
            if session is not None and identity == session.peer:  # before the reply: it says the worker is free
                self._end_session(f"its control plane ended it ({body.reason or 'no reason given'})")
            self._route([identity, *reply])
        elif method in INLINE_METHODS:
            self._route([identity, *self._execute(req.id, method, body, MessageFrames(frames[1:]))])
            if method == "shutdown":
                self.stopping = True
        else:
            self.in_flight += 1
            self.pool.submit(self._run_handler, identity, req.id, method, body, MessageFrames(frames[1:]))

    def _handshake(self, identity: bytes, request_id: int, body: pb.HandshakeRequest) -> None:
        if body.protocol_version != PROTOCOL_VERSION:
            self._error(
                identity, request_id, pb.PROTOCOL_MISMATCH,
                f"client speaks protocol version {body.protocol_version}, this worker speaks version {PROTOCOL_VERSION}; "
                "install matching versions of dpalign and dpalign_worker",
                client_version=str(body.protocol_version), worker_version=str(PROTOCOL_VERSION),
            )
            return
        now = time.monotonic()
        session_id = body.session_id or identity.hex()
        current = self.session
        if current is not None and current.id != session_id:
            if current.live(now):
                self._busy(identity, request_id, current, now)
                return
            why = "its connection is gone" if current.detached else f"it was silent for {now - current.last_seen:.0f} s"
            self._end_session(f"{why}; session {session_id[:8]} ({body.client or 'unnamed client'}) takes this worker over")
            current = None
        if current is None:
            self.session = Session(session_id, identity, body.client, body.session_timeout_ms / 1000, now, now)
            log.info("serving control plane %s (session %s)", body.client or "unnamed client", session_id[:8])
        else:  # the same control plane again (a reconnect or a restarted client): its models stay
            current.peer, current.client, current.detached = identity, body.client, False
            current.timeout_s, current.last_seen = body.session_timeout_ms / 1000, now
        self.peer = identity
        if body.heartbeat_interval_ms:
            self.heartbeat_ms = max(50, int(body.heartbeat_interval_ms))
        from .capabilities import capabilities

        reply = pb.Reply(id=request_id)
        reply.handshake.CopyFrom(
            pb.HandshakeReply(
                protocol_version=PROTOCOL_VERSION, worker_version=__version__, pid=os.getpid(),
                capabilities=capabilities(self.ctx.device, sorted(HANDLERS)), heartbeat_interval_ms=self.heartbeat_ms,
                hostname=self.hostname,
            )
        )
        self._send(identity, reply)

    def _busy(self, identity: bytes, request_id: int, s: Session, now: float) -> None:
        self._error(
            identity, request_id, pb.WORKER_BUSY,
            f"the worker on {self.hostname} (pid {os.getpid()}) is busy: it serves another control plane "
            f"({s.client or 'unnamed client'}, session {s.id[:8]}, connected {now - s.started:.0f} s ago, last heard from "
            f"{now - s.last_seen:.0f} s ago). A worker serves one control plane at a time: wait until that run ends, "
            "or start another worker for this one",
            session=s.id[:8], client=s.client, hostname=self.hostname,
        )

    def _end_session(self, why: str) -> None:
        """Forgets the session and drops its models, so that the next control plane starts from a
        clean worker. Requests of the old session still running finish on the models they hold."""
        s = self.session
        if s is None:
            return
        log.info("session %s (%s) ended: %s", s.id[:8], s.client or "unnamed client", why)
        self.session = None
        self.peer = None
        self.ctx.models.clear()
        distributed = sys.modules.get("dpalign_worker.engine.distributed")
        if distributed is not None:
            try:
                distributed.leave_group()
            except Exception:  # noqa: BLE001  a group whose other ranks are gone may not close cleanly
                log.warning("could not leave the process group of the ended session", exc_info=True)
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _heartbeat(self) -> None:
        if self.peer is None:
            return
        self.heartbeat_seq += 1
        hb = pb.Heartbeat(sequence=self.heartbeat_seq, in_flight=self.in_flight, uptime_s=time.monotonic() - self.started)
        self._send(self.peer, pb.Reply(id=0, heartbeat=hb))

    def _parent_alive(self) -> bool:
        if self.parent_pid is None:
            return True
        if os.getppid() != self.parent_pid:
            return False
        return True

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        next_beat = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.heartbeat_ms / 1000
                    if not self._parent_alive():
                        log.warning("parent process %s is gone; stopping", self.parent_pid)
                        break
                timeout = max(0, int((next_beat - time.monotonic()) * 1000))
                events = dict(poller.poll(timeout))
                if self.results in events:
                    while True:
                        try:
                            frames = self.results.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self.in_flight -= 1
                        self._route(frames, copy=False)
                if self.router in events:
                    while True:
                        try:
                            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_request(frames)
                if (self.stopping and self.in_flight == 0) or self.interrupted:
                    break
        finally:
            self.close()

    def interrupt(self) -> None:
        """Called from a signal handler (SIGINT/SIGTERM): serve() returns at its next wake-up (at
        most one heartbeat interval), even if the exception the handler raises is swallowed by code
        it lands in."""
        self.interrupted = True

    def close(self) -> None:
        """Stops taking work and closes the sockets; idempotent (serve's finally and an interrupt
        may both get here). Requests still running are abandoned: their replies have no socket."""
        if self._closed:
            return
        self._closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._push_lock:
            for s in self._push_sockets:
                s.close(0)
        self.results.close(0)
        self.router.close(500)
        if self._auth is not None:
            self._auth.stop()
        # libzmq unlinks an ipc:// file only when its I/O thread gets round to it, which a process
        # that exits right after close() may never let happen: remove our own socket file now.
        if self._ipc_path:
            try:
                os.unlink(self._ipc_path)
            except FileNotFoundError:
                pass


def _ipc_path(endpoint: str) -> str | None:
    """The file of an ipc:// endpoint (None for tcp and for Linux abstract names, ipc://@name)."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://"):]
    return None if not path or path.startswith("@") else path


def _die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when the parent dies (the poll check covers the rest)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def run(
    endpoint: str, *, threads: int, parent_pid: int | None, curve: CurveConfig | None = None,
    on_ready: Callable[[], None] | None = None, on_server: Callable[[WorkerServer], None] | None = None,
) -> int:
    """Serves until a shutdown request or the parent's death (returns 0). Signals are the caller's
    (__main__): `on_server` hands it the bound server, so that its SIGINT/SIGTERM handler can call
    server.interrupt() and raise; the exception propagates from here after the sockets are closed
    and the ipc:// file is removed."""
    if parent_pid is not None:
        _die_with_parent()
        if os.getppid() != parent_pid:
            return 0
    server = WorkerServer(endpoint, threads=threads, parent_pid=parent_pid, curve=curve)
    try:
        if on_server:
            on_server(server)
        if on_ready:
            on_ready()
        server.serve()
    finally:
        server.close()  # also when interrupted before serve() started
    return 0
