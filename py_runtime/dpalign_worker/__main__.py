"""`python -m dpalign_worker --endpoint ENDPOINT`: start a worker that serves one control plane."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dpalign_worker", description="dpalign's PyTorch worker (ZeroMQ ROUTER).")
    p.add_argument("--endpoint", required=True, help="address to bind, e.g. ipc:///tmp/dpalign.sock or tcp://127.0.0.1:5555")
    p.add_argument("--threads", type=int, default=4, help="requests executed concurrently (default 4)")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the control plane) dies")
    p.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--keys", default=None, help="CurveZMQ key directory (worker.key, authorized_keys) from `dpalign worker keygen`; required for non-loopback tcp")
    p.add_argument("--log-level", default=os.environ.get("DPALIGN_WORKER_LOG", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="[worker %(process)d] %(levelname)s %(message)s")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    import zmq

    from .security import KeyFileError, load_curve
    from .server import InsecureEndpointError, run

    try:
        curve = load_curve(args.keys) if args.keys else None
        secured = " (CurveZMQ)" if curve else ""
        return run(args.endpoint, threads=args.threads, parent_pid=args.parent_pid, curve=curve,
                   on_ready=lambda: print(f"dpalign worker listening on {args.endpoint}{secured}", file=sys.stderr, flush=True))
    except (KeyFileError, InsecureEndpointError) as e:
        print(f"dpalign worker: {e}", file=sys.stderr)
        return 2
    except zmq.ZMQError as e:  # a bind failure is the usual cause: say which endpoint
        print(f"dpalign worker: cannot bind {args.endpoint}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
