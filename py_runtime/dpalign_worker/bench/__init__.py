"""Benchmarks (not tests): run with `python -m dpalign_worker.bench.<name>`."""
