"""Importing this package registers every request handler (see registry.py)."""
from . import lifecycle  # noqa: F401  handshake, ping, shutdown, echo
from . import engine  # noqa: F401  models, tokenizers, train_step, generate, score, checkpoints
from . import distributed  # noqa: F401  init_process_group, trainable_hash (data parallelism)
