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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32  # AES-256
# Normals produced per keystream chunk: bounds the float64 temporaries (a few times 16 MiB) for
# large tensors while keeping the per-chunk overhead negligible.
CHUNK = 1 << 21
_MANTISSA = (1 << 53) - 1
_TWO_POW_M53 = 2.0 ** -53


class NoiseSource(Protocol):
    """What the add-noise stage needs: i.i.d. N(0, std^2) tensors, and how to report them."""

    mode: str  # StepReport.noise_mode: "secure" or "seeded" (the control plane checks these strings)
    seed: int  # StepReport.noise_seed: the user's seed in seeded mode, 0 in secure mode

    def gaussian(self, shape: torch.Size | tuple[int, ...], std: float, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor: ...


def box_muller(words: torch.Tensor) -> torch.Tensor:
    """Standard normals (float64) from an even number of uniformly random 64-bit words (int64).

    The top 53 bits of each word give a uniform on the float64 grid: u1 = (k + 1) / 2^53 lies in
    (0, 1], so log(u1) is always finite (no zero-log), and u2 = k / 2^53 lies in [0, 1). Each pair
    (u1, u2) gives two independent normals r cos(theta), r sin(theta). The largest |z| reachable
    is sqrt(2 * 53 * ln 2) ~ 8.57: a tail of probability ~1e-17 is cut, far below any delta used.
    """
    if words.numel() % 2:
        raise ValueError("box_muller needs an even number of words")
    # int64 >> is arithmetic, the mask drops the sign-extended bits: the word's top 53 bits.
    k = ((words >> 11) & _MANTISSA).to(torch.float64)
    half = k.numel() // 2
    u1 = (k[:half] + 1.0) * _TWO_POW_M53
    theta = k[half:] * (2.0 * math.pi * _TWO_POW_M53)
    r = torch.sqrt(-2.0 * torch.log(u1))
    return torch.cat((r * torch.cos(theta), r * torch.sin(theta)))


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
        # A key is used for exactly one stream, so a zero initial counter block is safe.
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = b""
        self._buf = bytearray()

    def keystream(self, n_bytes: int) -> bytearray:
        """The next n_bytes of the keystream (AES-CTR encryption of zeros). The buffer is reused
        by the next call: consume it first."""
        if len(self._zeros) < n_bytes:
            self._zeros = bytes(n_bytes)
            # update_into wants room for one extra block (an OpenSSL requirement for block ciphers)
            self._buf = bytearray(n_bytes + 15)
        out = memoryview(self._buf)[:n_bytes + 15]
        written = self._enc.update_into(memoryview(self._zeros)[:n_bytes], out)
        if written != n_bytes:  # CTR is a stream mode: never happens
            raise RuntimeError(f"AES-CTR returned {written} of {n_bytes} keystream bytes")
        return self._buf

    def words(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n uniformly random 64-bit words (as int64) on `device`."""
        stream = self.keystream(8 * n)
        w = torch.frombuffer(stream, dtype=torch.int64, count=n)
        # frombuffer shares the reused buffer: copy when the result stays on the CPU
        return w.clone() if torch.device(device).type == "cpu" else w.to(device)

    def gaussian(self, shape, std: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        size = torch.Size(shape)
        n = size.numel()
        out = torch.empty(n, dtype=dtype, device=device)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            z = box_muller(self.words(m + (m & 1), device))[:m]
            out[start:start + m] = (z * std).to(dtype)  # scaled in float64, cast once
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
