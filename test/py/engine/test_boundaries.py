"""The engine takes plain dataclasses: protobuf stops at handlers/ (which converts each way)."""
from __future__ import annotations

from pathlib import Path

import dpalign_worker.engine as engine


def test_engine_knows_nothing_of_protobuf():
    for f in sorted(Path(engine.__file__).parent.glob("*.py")):
        text = f.read_text()
        assert "worker_pb2" not in text and "google.protobuf" not in text and "WhichOneof" not in text, f.name
