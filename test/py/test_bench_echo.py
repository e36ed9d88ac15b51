"""The raw reference of `npm run bench:rpc` (dpalign_worker.bench.echo) returns messages as they came."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[2]


def test_echo_returns_every_frame_and_removes_its_socket_on_sigint(tmp_path):
    path = tmp_path / "echo.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py_runtime")}
    p = subprocess.Popen([sys.executable, "-m", "dpalign_worker.bench.echo", "--endpoint", f"ipc://{path}"],
                         stderr=subprocess.PIPE, text=True, env=env)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        assert p.stderr.readline().startswith("echo listening on ipc://")
        sock.connect(f"ipc://{path}")
        frames = [b"envelope", b"", os.urandom(200_000)]
        sock.send_multipart(frames)
        assert sock.recv_multipart() == frames
    finally:
        sock.close()
        p.send_signal(2)
        p.wait(timeout=10)
    assert p.returncode == 0
    deadline = time.monotonic() + 2
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.exists()
