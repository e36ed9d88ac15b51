"""A worker serves one control plane (session) at a time: a second is refused with WORKER_BUSY
until the first ends its session, its connection drops, or it stays silent past its timeout; the
same session may reconnect. Also the shared-filesystem probe (probe_path). The server runs in this
process (a thread), so the tests can look at its state; the clients are raw DEALER sockets."""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
import zmq

from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.server import PROTOCOL_VERSION, WorkerServer

CTX = zmq.Context.instance()


@pytest.fixture
def server():
    path = Path(tempfile.gettempdir()) / f"dpalign-single-{os.getpid()}-{time.monotonic_ns()}.sock"
    srv = WorkerServer(f"ipc://{path}", threads=2)
    t = threading.Thread(target=srv.serve, daemon=True)
    t.start()
    yield srv
    srv.interrupt()
    t.join(timeout=10)
    assert not t.is_alive()


class Client:
    def __init__(self, endpoint: str, routing_id: bytes | None = None) -> None:
        self.sock = CTX.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(endpoint)
        self.next_id = 1

    def call(self, field: str, msg, timeout_s: float = 10) -> pb.Reply:
        req = pb.Request(id=self.next_id)
        self.next_id += 1
        getattr(req, field).CopyFrom(msg)
        self.sock.send(req.SerializeToString())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                rep = pb.Reply()
                rep.ParseFromString(self.sock.recv_multipart()[0])
                if rep.id == req.id:
                    return rep
        pytest.fail(f"no reply to {field} within {timeout_s} s")

    def handshake(self, session: str, timeout_ms: int = 0, client: str = "test") -> pb.Reply:
        return self.call("handshake", pb.HandshakeRequest(
            protocol_version=PROTOCOL_VERSION, client=client, heartbeat_interval_ms=100,
            session_id=session, session_timeout_ms=timeout_ms))

    def heartbeats(self, within_s: float) -> int:
        """Heartbeats received within `within_s` seconds."""
        n, deadline = 0, time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                rep = pb.Reply()
                rep.ParseFromString(self.sock.recv_multipart()[0])
                n += rep.WhichOneof("result") == "heartbeat"
        return n

    def close(self) -> None:
        self.sock.close(0)


def until(cond, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_second_control_plane_is_refused_until_the_first_ends_its_session(server):
    a, b = Client(server.endpoint), Client(server.endpoint)
    try:
        assert a.handshake("session-a", client="control plane A").WhichOneof("result") == "handshake"
        server.ctx.models["policy"] = object()  # what session A loaded
        busy = b.handshake("session-b")
        assert busy.error.code == pb.WORKER_BUSY
        assert "busy" in busy.error.message and "control plane A" in busy.error.message
        assert "one control plane at a time" in busy.error.message
        # the refused handshake took nothing from A: its heartbeats still come, B gets none
        assert a.heartbeats(1.5) >= 2
        assert b.heartbeats(0.3) == 0
        assert "policy" in server.ctx.models
        # A ends its session: the worker keeps serving, without A's models, and B gets it
        assert a.call("shutdown", pb.ShutdownRequest(reason="done", end_session=True)).WhichOneof("result") == "shutdown"
        assert not server.stopping
        assert server.ctx.models == {}
        assert b.handshake("session-b").WhichOneof("result") == "handshake"
        assert b.heartbeats(1.5) >= 2
        # now A is the second one
        assert a.handshake("session-a").error.code == pb.WORKER_BUSY
    finally:
        a.close()
        b.close()


def test_a_dropped_connection_frees_the_worker(server):
    a = Client(server.endpoint)
    a.handshake("session-a")
    server.ctx.models["policy"] = object()
    a.close()  # the control plane is gone (killed): the next heartbeat to it finds no route
    assert until(lambda: server.session is not None and server.session.detached, 5)
    b = Client(server.endpoint)
    try:
        assert b.handshake("session-b").WhichOneof("result") == "handshake"
        assert server.ctx.models == {}  # a new session starts on a clean worker
    finally:
        b.close()


def test_a_silent_session_expires_after_its_timeout_but_not_before(server):
    a, b = Client(server.endpoint), Client(server.endpoint)
    try:
        a.handshake("session-a", timeout_ms=600)
        assert b.handshake("session-b").error.code == pb.WORKER_BUSY
        a.call("ping", pb.PingRequest())  # any request counts as a sign of life
        assert b.handshake("session-b").error.code == pb.WORKER_BUSY
        time.sleep(0.9)
        assert b.handshake("session-b").WhichOneof("result") == "handshake"
    finally:
        a.close()
        b.close()


def test_the_same_session_may_reconnect_and_keeps_its_models(server):
    a = Client(server.endpoint, routing_id=b"session-a")
    a.handshake("session-a")
    server.ctx.models["policy"] = object()
    a.close()
    # a restarted client (a new socket, the same session id) is the same control plane
    a2 = Client(server.endpoint, routing_id=b"session-a")
    try:
        assert a2.handshake("session-a").WhichOneof("result") == "handshake"
        assert "policy" in server.ctx.models
        assert a2.heartbeats(1.5) >= 2
    finally:
        a2.close()


def test_an_older_client_without_session_id_is_one_session_per_connection(server):
    a, b = Client(server.endpoint), Client(server.endpoint)
    try:
        assert a.handshake("").WhichOneof("result") == "handshake"
        assert b.handshake("").error.code == pb.WORKER_BUSY
    finally:
        a.close()
        b.close()


def test_probe_path_reads_back_the_control_planes_file_and_writes_one_of_its_own(server, tmp_path):
    c = Client(server.endpoint)
    try:
        c.handshake("s")
        probe = tmp_path / ".dpalign-probe-abc"
        probe.write_bytes(b"token-1")
        answer = tmp_path / ".dpalign-probe-abc.worker"
        r = c.call("probe_path", pb.ProbePathRequest(path=str(probe), expected=b"token-1", answer_path=str(answer), answer=b"back")).probe_path
        assert (r.found, r.matches, r.answered, r.error) == (True, True, True, "")
        assert r.hostname
        assert answer.read_bytes() == b"back"
        # another file at that path (a different filesystem mounted there), and no file at all
        r = c.call("probe_path", pb.ProbePathRequest(path=str(probe), expected=b"token-2")).probe_path
        assert (r.found, r.matches) == (True, False)
        r = c.call("probe_path", pb.ProbePathRequest(path=str(tmp_path / ".dpalign-probe-missing"), expected=b"x")).probe_path
        assert (r.found, r.matches) == (False, False)
        assert "FileNotFoundError" in r.error
        # an existing answer file is not overwritten
        r = c.call("probe_path", pb.ProbePathRequest(path=str(probe), expected=b"token-1", answer_path=str(answer), answer=b"again")).probe_path
        assert not r.answered and "FileExistsError" in r.answer_error
        assert answer.read_bytes() == b"back"
        # it reads and writes probe files only
        other = tmp_path / "secret.txt"
        other.write_text("x")
        for req in (pb.ProbePathRequest(path=str(other), expected=b"x"),
                    pb.ProbePathRequest(path=str(probe), expected=b"token-1", answer_path=str(tmp_path / "evil")),
                    pb.ProbePathRequest(path=".dpalign-probe-relative", expected=b"x")):
            err = c.call("probe_path", req).error
            assert err.code == pb.INVALID_ARGUMENT and ".dpalign-probe-" in err.message
        assert not (tmp_path / "evil").exists()
    finally:
        c.close()


def test_an_ended_session_leaves_its_process_group(server):
    import socket as pysocket

    import torch.distributed as dist

    from dpalign_worker.engine import distributed

    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = Client(server.endpoint)
    try:
        a.handshake("session-a")
        r = a.call("init_process_group", pb.InitProcessGroupRequest(rank=0, world_size=1, master_addr="127.0.0.1", master_port=port, backend="gloo", timeout_s=30), timeout_s=60)
        assert r.WhichOneof("result") == "init_process_group", r
        assert dist.is_initialized()
        a.call("shutdown", pb.ShutdownRequest(end_session=True))
        # the next control plane finds a lone worker, not one still bound to the old ranks
        assert not dist.is_initialized()
        assert distributed.group() is None
    finally:
        a.close()
        if dist.is_initialized():
            dist.destroy_process_group()
