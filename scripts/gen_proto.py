"""Generates the worker's Python protobuf module from proto/ (the one source of truth).

Usage: python scripts/gen_proto.py [--check]
--check exits 1 when the committed generated file differs from what the .proto produces now.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO = PROTO_ROOT / "dpalign" / "worker" / "v1" / "worker.proto"
OUT = ROOT / "py_runtime" / "dpalign_worker" / "protocol" / "worker_pb2.py"


def generate(out_dir: Path) -> Path:
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError:
        sys.exit("gen_proto: grpcio-tools is not installed; run `pip install grpcio-tools` in the worker environment")
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}", str(PROTO)])
    if code != 0:
        sys.exit(f"gen_proto: protoc failed with exit code {code}")
    return out_dir / "dpalign" / "worker" / "v1" / "worker_pb2.py"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp)).read_text()
    if args.check:
        if not OUT.exists() or OUT.read_text() != fresh:
            print(f"gen_proto: {OUT.relative_to(ROOT)} is stale; run `python scripts/gen_proto.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(fresh)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
