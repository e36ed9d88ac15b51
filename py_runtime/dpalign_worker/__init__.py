"""dpalign worker: the PyTorch side of dpalign."""
__version__ = "0.1.0"
