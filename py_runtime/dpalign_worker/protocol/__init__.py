"""Generated protobuf messages of the worker protocol (see proto/ and scripts/gen_proto.py)."""
