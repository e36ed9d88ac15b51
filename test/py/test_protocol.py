"""Protocol-level tests of the worker: generated code, tensor codec, the server's error handling."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from dpalign_worker.errors import WorkerError
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.server import WorkerServer
from dpalign_worker.tensors import MessageFrames, batch_from_proto, batch_to_proto, from_proto, message_frames, to_proto

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4),
        torch.randn(2, 5).to(torch.float16),
        torch.randn(2, 5).to(torch.bfloat16),
        torch.tensor([[1, -2, 2**62]], dtype=torch.int64),
        torch.empty(0, 3),
        torch.tensor([True, False]),
        torch.tensor(3.5, dtype=torch.float64),
    ],
    ids=["float32", "float16", "bfloat16", "int64", "empty", "bool", "scalar"],
)
def test_tensor_round_trip_keeps_dtype_shape_and_values(tensor):
    back = from_proto(to_proto(tensor))
    assert back.dtype == tensor.dtype
    assert back.shape == tensor.shape
    assert torch.equal(back, tensor)


def decode_in(frames: list, m: pb.Tensor) -> torch.Tensor:
    """Decodes `m` as the worker would within a request whose frames are [envelope, *frames]."""
    with message_frames(MessageFrames([b"envelope", *frames]), MessageFrames()):
        return from_proto(m, "x")


def test_tensor_bytes_must_match_dtype_and_shape():
    with pytest.raises(WorkerError, match="12 bytes expected") as e:
        decode_in([b"\x00" * 8], pb.Tensor(dtype="float32", shape=[3], frame=1))
    assert e.value.code == pb.INVALID_ARGUMENT
    assert e.value.details == {"tensor": "x", "frame": "1", "bytes": "8", "expected": "12"}
    with pytest.raises(WorkerError, match="unknown dtype"):
        decode_in([b"\x00" * 8], pb.Tensor(dtype="complex64", shape=[1], frame=1))


@pytest.mark.parametrize("frame", [0, 2, 1000])
def test_frame_reference_out_of_range_is_malformed(frame):
    with pytest.raises(WorkerError, match=f"refers to frame {frame}") as e:
        decode_in([b"\x00" * 4], pb.Tensor(dtype="float32", shape=[1], frame=frame))
    assert e.value.code == pb.MALFORMED_REQUEST
    assert e.value.details["frame"] == str(frame) and e.value.details["frames"] == "2"


def test_tensor_shares_the_frame_memory_unless_misaligned():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    addr = f"inproc://frames-{time.monotonic_ns()}"
    a.bind(addr)
    b.connect(addr)
    try:
        x = torch.arange(300_000, dtype=torch.float32)  # above pyzmq's copy threshold: sent by reference
        a.send_multipart([b"envelope", x.numpy()], copy=False)
        frames = b.recv_multipart(copy=False)
        with message_frames(MessageFrames(frames), MessageFrames()):
            t = from_proto(pb.Tensor(dtype="float32", shape=[300_000], frame=1))
        assert torch.equal(t, x)
        address = np.frombuffer(frames[1].buffer, np.uint8).ctypes.data
        assert t.data_ptr() == address  # no copy
    finally:
        a.close(0)
        b.close(0)
    raw = bytearray(13)
    raw[1:13] = torch.tensor([1.0, 2.0, 3.0]).numpy().tobytes()
    view = memoryview(raw)[1:]  # an odd address: copied once, then aligned
    t = decode_in([view], pb.Tensor(dtype="float32", shape=[3], frame=1))
    assert t.tolist() == [1.0, 2.0, 3.0] and t.data_ptr() % 4 == 0


def test_encoding_appends_one_frame_per_tensor_without_copying():
    x, y = torch.arange(6.0).reshape(2, 3), torch.tensor([True, False])
    out = MessageFrames()
    with message_frames(MessageFrames(), out):
        batch = batch_to_proto({"x": x, "y": y})
    assert [batch.tensors[k].frame for k in ("x", "y")] == [1, 2]
    assert len(out.payloads()) == 2
    assert np.frombuffer(out.payloads()[0], np.uint8).ctypes.data == x.data_ptr()
    assert bytes(out.payloads()[1]) == b"\x01\x00"


def test_batch_round_trip():
    batch = {"a": torch.arange(6).reshape(2, 3), "b": torch.ones(2)}
    back = batch_from_proto(batch_to_proto(batch))
    assert set(back) == {"a", "b"} and torch.equal(back["a"], batch["a"])


@pytest.fixture()
def server():
    endpoint = f"ipc://{tempfile.gettempdir()}/dpalign-pytest-{os.getpid()}-{time.monotonic_ns()}.sock"
    srv = WorkerServer(endpoint, threads=2)
    srv.heartbeat_ms = 100
    t = threading.Thread(target=srv.serve, daemon=True)
    t.start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(endpoint)
    yield sock
    sock.send(pb.Request(id=999, shutdown=pb.ShutdownRequest()).SerializeToString())
    t.join(timeout=5)
    sock.close()


def call(sock, request: pb.Request, frames: tuple = ()) -> pb.Reply:
    return call_frames(sock, request, frames)[0]


def call_frames(sock, request: pb.Request, frames: tuple = ()) -> tuple[pb.Reply, list[bytes]]:
    sock.send_multipart([request.SerializeToString(), *frames])
    while True:
        reply = pb.Reply()
        envelope, *rest = sock.recv_multipart()
        reply.ParseFromString(envelope)
        if reply.WhichOneof("result") != "heartbeat":
            return reply, rest


def test_handshake_reports_capabilities(server):
    r = call(server, pb.Request(id=1, handshake=pb.HandshakeRequest(protocol_version=pb.PROTOCOL_VERSION_CURRENT)))
    assert r.id == 1 and r.handshake.protocol_version == pb.PROTOCOL_VERSION_CURRENT
    assert "echo" in r.handshake.capabilities.methods
    assert r.handshake.capabilities.torch_version == torch.__version__


def test_handshake_refuses_another_version(server):
    r = call(server, pb.Request(id=2, handshake=pb.HandshakeRequest(protocol_version=77)))
    assert r.error.code == pb.PROTOCOL_MISMATCH
    assert "77" in r.error.message and str(pb.PROTOCOL_VERSION_CURRENT) in r.error.message


def test_exception_becomes_typed_error(server):
    r = call(server, pb.Request(id=3, echo=pb.EchoRequest(raise_error="nope")))
    assert r.id == 3 and r.error.code == pb.DEBUG_RAISED and r.error.message == "nope"


def test_malformed_bytes_get_an_error_reply_and_the_worker_lives(server):
    server.send(b"\xff\xff\x00garbage")
    reply = pb.Reply()
    while True:
        reply.ParseFromString(server.recv_multipart()[0])
        if reply.WhichOneof("result") == "error":
            break
    assert reply.error.code == pb.MALFORMED_REQUEST
    assert call(server, pb.Request(id=4, ping=pb.PingRequest())).WhichOneof("result") == "ping"


def test_echo_moves_tensors_as_frames(server):
    x = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    req = pb.Request(id=7, echo=pb.EchoRequest(payload=b"p"))
    req.echo.batch.tensors["x"].CopyFrom(pb.Tensor(dtype="int64", shape=[3, 4], frame=2))
    req.echo.batch.tensors["e"].CopyFrom(pb.Tensor(dtype="float32", shape=[0, 5], frame=1))
    reply, frames = call_frames(server, req, (b"", x.numpy().tobytes()))
    assert reply.id == 7 and reply.echo.payload == b"p"
    t = reply.echo.batch.tensors
    assert (t["x"].dtype, list(t["x"].shape)) == ("int64", [3, 4])
    assert len(frames) == 2 and sorted(t[k].frame for k in t) == [1, 2]
    assert frames[t["x"].frame - 1] == x.numpy().tobytes() and frames[t["e"].frame - 1] == b""


@pytest.mark.parametrize("frame,extra,code,word", [
    (2, (b"\x00" * 16,), pb.MALFORMED_REQUEST, "refers to frame 2"),
    (0, (b"\x00" * 16,), pb.MALFORMED_REQUEST, "refers to frame 0"),
    (1, (), pb.MALFORMED_REQUEST, "carries no tensor frames"),
    (1, (b"\x00" * 15,), pb.INVALID_ARGUMENT, "16 bytes expected"),
])
def test_bad_frame_references_get_a_typed_error_and_the_worker_lives(server, frame, extra, code, word):
    req = pb.Request(id=8, echo=pb.EchoRequest())
    req.echo.batch.tensors["v"].CopyFrom(pb.Tensor(dtype="float32", shape=[4], frame=frame))
    r = call(server, req, extra)
    assert r.id == 8 and r.error.code == code and word in r.error.message
    assert r.error.details["tensor"] == "v" and r.error.details["frame"] == str(frame)
    assert call(server, pb.Request(id=9, ping=pb.PingRequest())).WhichOneof("result") == "ping"


def test_request_without_method_lists_supported_ones(server):
    r = call(server, pb.Request(id=5))
    assert r.error.code == pb.UNKNOWN_METHOD
    assert "echo" in r.error.details["supported"]


def test_heartbeats_follow_the_handshake(server):
    call(server, pb.Request(id=6, handshake=pb.HandshakeRequest(protocol_version=pb.PROTOCOL_VERSION_CURRENT, heartbeat_interval_ms=50)))
    seen = []
    deadline = time.monotonic() + 3
    while len(seen) < 2 and time.monotonic() < deadline:
        reply = pb.Reply()
        reply.ParseFromString(server.recv_multipart()[0])
        if reply.WhichOneof("result") == "heartbeat":
            seen.append(reply.heartbeat.sequence)
    assert len(seen) == 2 and seen[1] > seen[0]


def test_worker_exits_when_its_parent_dies(tmp_path):
    endpoint = f"ipc://{tmp_path}/w.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py_runtime")}
    # bash starts the worker with itself as parent, prints the worker's pid, then is killed.
    parent = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m dpalign_worker --endpoint {endpoint} --parent-pid $$ & echo $!; wait'],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    worker_pid = int(parent.stdout.readline())
    time.sleep(1.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it became our child's zombie
            os.waitpid(worker_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(worker_pid, signal.SIGKILL)
    pytest.fail("worker outlived its parent by 10 s")


def test_spliced_reply_equals_a_built_one():
    from dpalign_worker.server import encode_result

    result = pb.EchoReply(payload=b"x" * 300)
    result.batch.tensors["t"].CopyFrom(pb.Tensor(dtype="float32", shape=[50], frame=1))
    spliced = pb.Reply()
    spliced.ParseFromString(encode_result(2**40, "echo", result))
    built = pb.Reply(id=2**40)
    built.echo.CopyFrom(result)
    assert spliced == built
