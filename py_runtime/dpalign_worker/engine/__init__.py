"""The worker's tensor engine: models, tokenizers, LoRA and heads, per-example gradients, the DP
step as named stages, optimizers, generation, scoring and checkpoints.

Pure PyTorch: nothing here knows about ZeroMQ or protobuf (see handlers/engine.py for that).
"""
