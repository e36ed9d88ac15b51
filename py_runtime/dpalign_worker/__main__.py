"""`python -m dpalign_worker --endpoint ENDPOINT`: start a worker that serves one control plane.

Exit codes:
  0    stopped by a shutdown request, by the parent's death, or by SIGTERM (the way the control
       plane and service managers ask a process to stop: an orderly stop, not a failure)
  2    bad endpoint or keys (cannot bind, insecure tcp, unreadable key files)
  3    this Python lacks packages the worker needs (the message names them and the fix)
  130  SIGINT / Ctrl-C (128 + 2, the shell convention for an interrupted command)
Both signals end the worker with one line on stderr, never a traceback, at any point (also
while torch is still being imported); sockets are closed and an ipc:// socket file is removed.
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_MISSING_PACKAGES = 3
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 0}

# (module to import, pip package that provides it, import now?). Modules the server imports at
# start anyway are imported here for real, which also catches broken installs; the lazily
# imported ones (only needed to build models) are only looked up, to keep start-up fast.
REQUIRED = (
    ("torch", "torch", True),
    ("numpy", "numpy", True),
    ("zmq", "pyzmq", True),
    ("google.protobuf", "protobuf", True),
    ("safetensors", "safetensors", True),
    ("cryptography", "cryptography", True),
    ("tokenizers", "tokenizers", False),
    ("transformers", "transformers", False),
)


class Interrupted(BaseException):
    """Raised by the SIGINT/SIGTERM handler once the server is up. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_server = None  # the bound WorkerServer, once there is one
_received: int | None = None  # the first stop signal, if any


def _say_stopping(signum: int) -> None:
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    try:
        print(f"dpalign worker: {what}, shutting down", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed by the parent: nothing to tell
        pass


def _on_signal(signum: int, _frame: object) -> None:
    """Before the server is bound there is nothing to clean up (the signal may land anywhere in
    torch's import, including code that swallows exceptions): leave at once. After, ask the server
    to stop and raise, so that its sockets are closed and the ipc:// file is removed; interrupt()
    ends the loop even if the exception is swallowed. A second signal leaves at once."""
    global _received
    if _server is None or _received is not None:
        if _received is None:
            _say_stopping(signum)
        os._exit(EXIT_CODES.get(signum, 128 + signum))
    _received = signum
    _server.interrupt()
    raise Interrupted(signum)


def _on_server(server) -> None:
    global _server
    _server = server


def install_signal_handlers() -> None:
    for sig in EXIT_CODES:
        # a shell starts background jobs with SIGINT ignored; respect that as Python itself does
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)


def missing_packages() -> tuple[list[str], list[str]]:
    """(missing, broken): pip names of required packages that are absent, and 'name (error)' for
    those present that fail to import."""
    import importlib
    import importlib.util

    missing, broken = [], []
    for module, package, load in REQUIRED:
        try:
            if load:
                importlib.import_module(module)
            elif importlib.util.find_spec(module) is None:
                missing.append(package)
        except ModuleNotFoundError as e:
            # absent if the module (or its parent: 'google' for google.protobuf) is what is missing;
            # otherwise one of the package's own dependencies is
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                missing.append(package)
            else:
                broken.append(f"{package} (ModuleNotFoundError: {e})")
        except Exception as e:  # an installed package that cannot load: wrong ABI, missing library
            broken.append(f"{package} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return missing, broken


def dependency_message(missing: list[str], broken: list[str]) -> str:
    python = sys.executable or "python"
    req = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "requirements.txt"))
    req = req if os.path.isfile(req) else "requirements.txt (in the dpalign checkout)"
    what = []
    if missing:
        what.append(f"lacks packages the worker needs: {', '.join(missing)}")
    if broken:
        what.append(f"has packages that fail to import: {'; '.join(broken)}")
    lines = [f"dpalign worker: this Python ({python}, {sys.version.split()[0]}) {' and '.join(what)}.",
             f"Fix: {python} -m pip install -r {req}"]
    if os.environ.get("DPALIGN_PYTHON"):
        lines[-1] += ", or unset DPALIGN_PYTHON to let dpalign manage its own .venv"
    else:
        lines[-1] += ", or run `npm run setup:python` to (re)create dpalign's .venv"
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    rc = 0
    try:
        rc = _main(argv)
    except Interrupted:
        pass
    if _received is None:
        return rc
    import logging

    logging.shutdown()
    _say_stopping(_received)
    sys.stdout.flush()
    # os._exit: a request still running on a pool thread would otherwise keep the interpreter
    # alive until it finishes (its reply has no socket left); the sockets are closed already.
    os._exit(EXIT_CODES[_received])


def _main(argv: list[str] | None) -> int:
    import argparse
    import logging

    p = argparse.ArgumentParser(prog="python -m dpalign_worker", description="dpalign's PyTorch worker (ZeroMQ ROUTER).")
    p.add_argument("--endpoint", required=True, help="address to bind, e.g. ipc:///tmp/dpalign.sock or tcp://127.0.0.1:5555")
    p.add_argument("--threads", type=int, default=4, help="requests executed concurrently (default 4)")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the control plane) dies")
    p.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--keys", default=None, help="CurveZMQ key directory (worker.key, authorized_keys) from `dpalign worker keygen`; required for non-loopback tcp")
    p.add_argument("--log-level", default=os.environ.get("DPALIGN_WORKER_LOG", "INFO"))
    args = p.parse_args(argv)
    # The level applies to the worker's own logger; other libraries (torch prints cache statistics
    # at INFO on exit) stay at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[worker %(process)d] %(levelname)s %(message)s")
    logging.getLogger("dpalign_worker").setLevel(args.log_level.upper())

    missing, broken = missing_packages()  # before the server's imports would fail with a traceback
    if missing or broken:
        print(dependency_message(missing, broken), file=sys.stderr, flush=True)
        return EXIT_MISSING_PACKAGES
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    import zmq

    from .security import KeyFileError, load_curve
    from .server import InsecureEndpointError, run

    try:
        curve = load_curve(args.keys) if args.keys else None
        secured = " (CurveZMQ)" if curve else ""
        return run(args.endpoint, threads=args.threads, parent_pid=args.parent_pid, curve=curve, on_server=_on_server,
                   on_ready=lambda: print(f"dpalign worker listening on {args.endpoint}{secured}", file=sys.stderr, flush=True))
    except (KeyFileError, InsecureEndpointError) as e:
        print(f"dpalign worker: {e}", file=sys.stderr)
        return 2
    except zmq.ZMQError as e:  # a bind failure is the usual cause: say which endpoint
        print(f"dpalign worker: cannot bind {args.endpoint}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
