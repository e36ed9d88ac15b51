"""The worker as a process: Ctrl-C / SIGTERM end it quietly (one line, exit 130 / 0, the ipc://
file removed), also mid-request and mid-start-up; a Python without its packages gets one message
naming them and the fix (exit 3)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from dpalign_worker.protocol import worker_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "py_runtime"), "PYTHONUNBUFFERED": "1"}
ENV.pop("DPALIGN_PYTHON", None)
START_S = 120  # importing torch on a loaded shared machine can be slow


def endpoint() -> tuple[str, Path]:
    path = Path(tempfile.gettempdir()) / f"dpalign-sig-{os.getpid()}-{time.monotonic_ns()}.sock"
    return f"ipc://{path}", path


def start(ep: str) -> subprocess.Popen:
    # a fresh session: the signals we send reach only this worker
    return subprocess.Popen([sys.executable, "-m", "dpalign_worker", "--endpoint", ep, "--threads", "2"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV,
                            start_new_session=True)


def wait_listening(p: subprocess.Popen) -> str:
    seen = []
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen.append(line)
        if "listening on" in line:
            return "".join(seen)
    p.kill()
    pytest.fail(f"worker did not start: {''.join(seen)}{p.stderr.read()}")


def stop(p: subprocess.Popen, sig: int) -> tuple[int, str]:
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the worker did not stop within 30 s of the signal")
    return p.returncode, err


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 0, "terminated")])
def test_signal_while_idle_is_quiet(sig, code, word):
    ep, path = endpoint()
    p = start(ep)
    wait_listening(p)
    assert path.exists()
    rc, err = stop(p, sig)
    assert rc == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"dpalign worker: {word}, shutting down"]
    assert not path.exists()  # the ipc:// socket file is gone


def test_sigint_with_a_request_in_flight_stops_at_once():
    ep, path = endpoint()
    p = start(ep)
    wait_listening(p)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ep)
        sock.send(pb.Request(id=1, echo=pb.EchoRequest(sleep_ms=60_000)).SerializeToString())
        time.sleep(0.5)  # the request is now sleeping on a pool thread
        t = time.monotonic()
        rc, err = stop(p, signal.SIGINT)
        assert time.monotonic() - t < 15  # not after the 60 s request
    finally:
        sock.close()
    assert rc == 130 and "Traceback" not in err, err
    assert not path.exists()


def test_sigint_during_start_up_is_quiet():
    ep, path = endpoint()
    p = start(ep)
    time.sleep(0.3)  # most likely inside `import torch`
    rc, err = stop(p, signal.SIGINT)
    assert rc == 130 and "Traceback" not in err, err
    assert "interrupted, shutting down" in err
    assert not path.exists()


BLOCKER = """
import sys, runpy
class Block:
    # a meta path finder that makes the named top-level packages look uninstalled
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ['dpalign_worker', '--endpoint', {ep!r}]
runpy.run_module('dpalign_worker', run_name='__main__', alter_sys=True)
"""


@pytest.mark.parametrize("blocked,named", [
    ({"zmq"}, ["pyzmq"]),
    ({"google", "transformers"}, ["protobuf", "transformers"]),
])
def test_missing_packages_are_named_with_the_fix(blocked, named):
    ep, path = endpoint()
    r = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked, ep=ep)], capture_output=True,
                       text=True, env=ENV, timeout=START_S)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "No module named 'google'" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("dpalign worker: this Python") and "lacks packages the worker needs" in first
    for pkg in named:
        assert pkg in first
    assert f"{sys.executable} -m pip install -r {ROOT / 'requirements.txt'}" in r.stderr
    assert "setup:python" in r.stderr
    assert not path.exists()


def test_missing_package_message_with_dpalign_python():
    r = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked={"safetensors"}, ep="ipc:///tmp/unused.sock")],
                       capture_output=True, text=True, env={**ENV, "DPALIGN_PYTHON": sys.executable}, timeout=START_S)
    assert r.returncode == 3 and "safetensors" in r.stderr
    assert "unset DPALIGN_PYTHON" in r.stderr
