"""The raw reference for `npm run bench:rpc`: a bare pyzmq ROUTER that sends every message back
as it came, frames received and sent with copy=False, no protobuf, no thread pool, no torch. What
the bench measures against it is the ceiling the worker protocol can reach on this machine.

    python -m dpalign_worker.bench.echo --endpoint ipc:///tmp/x.sock [--parent-pid PID]

Prints "echo listening on ENDPOINT" on stderr once bound; exits on SIGTERM/SIGINT, or within a
second of its parent's death when --parent-pid is given.
"""
from __future__ import annotations

import argparse
import os
import sys

import zmq


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m dpalign_worker.bench.echo")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(args.endpoint)
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    print(f"echo listening on {endpoint}", file=sys.stderr, flush=True)
    try:
        while args.parent_pid is None or os.getppid() == args.parent_pid:
            if router.poll(1000):
                router.send_multipart(router.recv_multipart(copy=False), copy=False)
    except KeyboardInterrupt:
        pass
    finally:
        router.close(0)
        if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
            try:
                os.unlink(endpoint[len("ipc://"):])
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
