"""Gaussian noise sources for the DP step's add-noise stage (DESIGN.md, DP rule 6).

  SecureGaussian  the default. A fresh 256-bit key from os.urandom (one per DP step), expanded by
                  AES-256 in counter mode into a keystream; 64-bit words of that stream become
                  53-bit uniforms, and the Box-Muller transform in float64 turns them into
                  standard normals, which are scaled by std and only then cast to the gradient's
                  dtype. The noise is therefore as unpredictable as the key: nobody who sees
                  released models or earlier noise can recompute it, which MT19937 or Philox
                  seeded with 63 bits cannot promise.
  SeededGaussian  reproducible runs only (reported as NOT private by the control plane): torch's
                  generator seeded from (noise_seed, step), so a resumed run draws the same noise
                  as an uninterrupted one.

Why AES-256-CTR from `cryptography` (OpenSSL): it is a standard PRF, runs at several GB/s with
AES-NI / ARMv8 crypto instructions (ChaCha20 was as fast here; hashlib's SHAKE-256 was 16x
slower), and its 128-bit counter has no practical stream-length limit, unlike OpenSSL's 32-bit
ChaCha20 block counter. Each key encrypts one stream starting at counter 0 and is never reused.

The keystream is produced on the CPU; the uniform-to-normal transform runs with torch on the
gradient's device (float64), so on a GPU only the raw words cross the bus.
"""
from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np
import torch

KEY_BYTES = 32  # AES-256
# Normals per keystream chunk. CPU: 256 Ki keeps the float64 temporaries (2 MiB each) in cache
# and each torch op large enough to amortise its overhead (64 Ki to 1 Mi were within 25% here;
# 16 Ki was slow, and catastrophic with 2 OpenMP threads on a loaded machine). GPU: 4 Mi, fewer
# host-to-device copies and kernel launches.
CHUNK = 1 << 18
CHUNK_GPU = 1 << 22
_MANTISSA = (1 << 53) - 1
_TWO_POW_M53 = 2.0 ** -53


class NoiseSource(Protocol):
    """What the add-noise stage needs: i.i.d. N(0, std^2) tensors, and how to report them."""

    mode: str  # StepReport.noise_mode: "secure" or "seeded" (the control plane checks these strings)
    seed: int  # StepReport.noise_seed: the user's seed in seeded mode, 0 in secure mode

    def gaussian(self, shape: torch.Size | tuple[int, ...], std: float, dtype: torch.dtype,
                 device: torch.device | str) -> torch.Tensor: ...


def box_muller_into(words: torch.Tensor, std: float, out: torch.Tensor) -> None:
    """Writes len(out) normals N(0, std^2) computed from `words` (an even number >= len(out) of
    uniformly random 64-bit words, int64, on out's device; left unchanged) into `out` (any float
    dtype).

    The top 53 bits of each word give a uniform on the float64 grid: u1 = (k + 1) / 2^53 lies in
    (0, 1], so log(u1) is always finite (no zero-log), and u2 = k / 2^53 lies in [0, 1). Each pair
    (u1, u2) gives two independent normals r cos(theta), r sin(theta). All of it is float64, scaled
    by std before the single cast to out's dtype. The largest |z| reachable is
    sqrt(2 * 53 * ln 2) ~ 8.57: a tail of probability ~1e-17 is cut, far below any delta used.
    In-place ops throughout: the transform is memory-bound, each pass saved is time saved.
    """
    n2 = words.numel()
    if n2 % 2 or n2 < out.numel():
        raise ValueError(f"box_muller needs an even number of words >= {out.numel()}, got {n2}")
    half = n2 // 2
    # int64 >> is arithmetic, the mask drops the sign-extended bits: the word's top 53 bits
    k = torch.bitwise_right_shift(words, 11).bitwise_and_(_MANTISSA).to(torch.float64)
    r = k[:half].add_(1.0).mul_(_TWO_POW_M53).log_().mul_(-2.0).sqrt_().mul_(std)
    theta = k[half:].mul_(2.0 * math.pi * _TWO_POW_M53)
    m = out.numel()
    out[:half].copy_(torch.cos(theta).mul_(r)[:m])
    if m > half:
        out[half:].copy_(theta.sin_().mul_(r)[:m - half])


def box_muller(words: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Normals (float64) from an even number of random 64-bit words: cos halves, then sin halves."""
    out = torch.empty(words.numel(), dtype=torch.float64, device=words.device)
    box_muller_into(words, std, out)
    return out


class SecureGaussian:
    """Gaussian noise from AES-256-CTR keyed by os.urandom. Use one instance per DP step.

    `key` exists for known-answer tests only; production code passes nothing, so that every
    instance draws its own key and the key lives only as long as the instance."""

    mode = "secure"
    seed = 0

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(KEY_BYTES) if key is None else key
        if len(key) != KEY_BYTES:
            raise ValueError(f"SecureGaussian needs a {KEY_BYTES}-byte key, got {len(key)}")
        # Imported here so that an environment without `cryptography` (a GPU image used only for
        # benchmarks with seeded noise, say) can still import the engine; secure mode then fails
        # at its first step, naming the missing package.
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        except ImportError as exc:
            from ..errors import invalid_argument
            raise invalid_argument(
                "secure noise needs the `cryptography` package (AES-CTR keystream); install the worker's "
                "requirements (pip install -r requirements.txt) or, for a debugging run that is NOT private, use seeded noise"
            ) from exc
        # A key is used for exactly one stream, so a zero initial counter block is safe.
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = b""
        self._words = torch.empty(0, dtype=torch.int64)

    def _fill(self, n_words: int) -> torch.Tensor:
        """The next n_words 64-bit words of the keystream (AES-CTR encryption of zeros), written
        straight into a reused CPU int64 buffer: consume the result before the next call."""
        n_bytes = 8 * n_words
        if len(self._zeros) < n_bytes:
            self._zeros = bytes(n_bytes)
            # update_into wants 15 spare bytes (OpenSSL's block-cipher rule): two spare words
            self._words = torch.empty(n_words + 2, dtype=torch.int64)
        buf = memoryview(self._words.numpy()).cast("B")
        written = self._enc.update_into(memoryview(self._zeros)[:n_bytes], buf[:n_bytes + 15])
        if written != n_bytes:  # CTR is a stream mode: never happens
            raise RuntimeError(f"AES-CTR returned {written} of {n_bytes} keystream bytes")
        return self._words[:n_words]

    def keystream(self, n_bytes: int) -> bytes:
        """The next n_bytes of the keystream (a multiple of 8), for tests."""
        return self._fill((n_bytes + 7) // 8).numpy().tobytes()[:n_bytes]

    def gaussian(self, shape, std: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        size = torch.Size(shape)
        n = size.numel()
        device = torch.device(device)
        chunk = CHUNK if device.type == "cpu" else CHUNK_GPU
        out = torch.empty(n, dtype=dtype, device=device)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            words = self._fill(m + (m & 1))
            # on a GPU only the raw words cross the bus (a blocking copy: the buffer is reused);
            # on the CPU the transform works in place on the buffer itself
            box_muller_into(words if device.type == "cpu" else words.to(device), std, out[start:start + m])
        return out.view(size)


class SeededGaussian:
    """Reproducible noise: torch's generator on `device`, seeded from (noise_seed, step). Bit for
    bit what earlier versions drew, so seeded runs keep their results."""

    mode = "seeded"

    def __init__(self, seed: int, step: int, device: torch.device | str) -> None:
        self.seed = int(seed)
        derived = int(np.random.SeedSequence([self.seed, int(step)]).generate_state(1, np.uint64)[0]) >> 1
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(derived)

    def gaussian(self, shape, std: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        return (torch.randn(tuple(shape), generator=self._gen, device=device, dtype=torch.float32) * std).to(dtype)


def noise_source(secure: bool, seed: int, step: int, device: torch.device | str) -> NoiseSource:
    """The noise for one DP step: a fresh secure source, or the seeded one for (seed, step)."""
    return SecureGaussian() if secure else SeededGaussian(seed, step, device)
