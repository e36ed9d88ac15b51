"""Noise sources: the secure one is AES-256-CTR under a fresh key, its normals pass a KS test, and
the seeded one stays reproducible."""
from __future__ import annotations

import math

import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dpalign_worker.engine import noise
from dpalign_worker.engine.noise import SecureGaussian, SeededGaussian, box_muller, noise_source

KEY = bytes(range(32))  # a fixed key makes the statistical tests deterministic (never flaky)


def ks_normal(x: torch.Tensor) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov test against N(0, 1): (D, asymptotic p-value).

    p = Q_KS((sqrt(n) + 0.12 + 0.11 / sqrt(n)) D), with Q_KS(t) = 2 sum_k (-1)^(k-1) exp(-2 k^2 t^2)
    (Stephens' small-sample correction, as in Numerical Recipes' ksone)."""
    x = torch.sort(x.double().flatten()).values
    n = x.numel()
    cdf = torch.special.ndtr(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())
    return d, kolmogorov_q((math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d)


def kolmogorov_q(t: float) -> float:
    """P(K > t) for the Kolmogorov distribution (the limit of sqrt(n) D)."""
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101))
    return min(max(p, 0.0), 1.0)


def test_kolmogorov_tail_matches_the_tables():
    # textbook critical values of sqrt(n) D: 1.2238 (10%), 1.3581 (5%), 1.6276 (1%)
    for t, p in ((1.2238, 0.10), (1.3581, 0.05), (1.6276, 0.01)):
        assert kolmogorov_q(t) == pytest.approx(p, abs=2e-4)


def test_ks_statistic_detects_a_wrong_distribution():
    # the home-made KS test must have teeth: uniform and slightly scaled normals are rejected
    g = torch.Generator().manual_seed(0)
    assert ks_normal(torch.rand(200_000, generator=g) * 2 - 1)[1] < 1e-6
    assert ks_normal(torch.randn(200_000, generator=g, dtype=torch.float64) * 1.05)[1] < 1e-6
    assert ks_normal(torch.randn(200_000, generator=g, dtype=torch.float64) + 0.03)[1] < 1e-6
    assert ks_normal(torch.randn(200_000, generator=g, dtype=torch.float64))[1] > 1e-3


def test_keystream_is_aes_256_ctr_from_counter_zero():
    # known answer: block i of the stream is AES-256_K(i) (big-endian 128-bit counter), so the
    # stream really comes from the cipher and continues across calls without repeating
    src = SecureGaussian(KEY)
    got = src.keystream(48) + src.keystream(32)
    ecb = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()
    want = ecb.update(b"".join(i.to_bytes(16, "big") for i in range(5))) + ecb.finalize()
    assert got == want


def test_secure_normals_pass_ks_and_moments():
    n = 400_000
    z = SecureGaussian(KEY).gaussian((n,), 1.0, torch.float64, "cpu")
    d, p = ks_normal(z)
    assert p > 1e-3, (d, p)
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.std()) - 1) < 5 / math.sqrt(2 * n)
    # fourth moment of a normal is 3 (var of z^2 is 96/n after the division below)
    assert abs(float(z.pow(4).mean()) - 3) < 5 * math.sqrt(96 / n)


def test_secure_normals_with_a_fresh_key_pass_ks():
    # the production path (os.urandom key); p > 1e-4 keeps the chance of a spurious failure tiny
    z = SecureGaussian().gaussian((300_000,), 1.0, torch.float64, "cpu")
    assert ks_normal(z)[1] > 1e-4


def test_scale_dtype_shape_and_chunks(monkeypatch):
    monkeypatch.setattr(noise, "CHUNK", 1000)  # many chunks, one of odd length at the end
    z = SecureGaussian(KEY).gaussian((7, 301, 3), 2.5, torch.float32, torch.device("cpu"))
    assert z.shape == (7, 301, 3) and z.dtype == torch.float32
    assert abs(float(z.double().std()) / 2.5 - 1) < 0.05
    # chunking changes nothing but the boundaries: the first chunk equals an unchunked draw
    monkeypatch.setattr(noise, "CHUNK", 1 << 21)
    whole = SecureGaussian(KEY).gaussian((1000,), 2.5, torch.float32, "cpu")
    assert torch.equal(z.flatten()[:1000], whole)


@pytest.mark.parametrize("shape", [(), (1,), (0,), (3, 0), (5,)])
def test_tiny_and_empty_shapes(shape):
    z = SecureGaussian(KEY).gaussian(shape, 1.0, torch.float32, "cpu")
    assert z.shape == torch.Size(shape) and torch.isfinite(z).all()


def test_box_muller_extremes_are_finite():
    words = torch.tensor([0, -1, -1, 0, 1 << 11, (1 << 63) - 1], dtype=torch.int64)
    z = box_muller(words)
    assert torch.isfinite(z).all()
    assert float(z.abs().max()) < 8.6  # sqrt(2 * 53 * ln 2): the largest value the transform reaches
    with pytest.raises(ValueError):
        box_muller(torch.zeros(3, dtype=torch.int64))


def test_two_secure_sources_draw_different_noise():
    a = noise_source(True, 5, 0, "cpu").gaussian((1000,), 1.0, torch.float32, "cpu")
    b = noise_source(True, 5, 0, "cpu").gaussian((1000,), 1.0, torch.float32, "cpu")
    assert not torch.equal(a, b)
    # and one source never repeats itself
    src = SecureGaussian()
    assert not torch.equal(src.gaussian((1000,), 1.0, torch.float32, "cpu"), src.gaussian((1000,), 1.0, torch.float32, "cpu"))


def test_seeded_source_is_reproducible_per_step():
    draw = lambda seed, step: SeededGaussian(seed, step, "cpu").gaussian((500,), 1.5, torch.float32, "cpu")  # noqa: E731
    assert torch.equal(draw(7, 3), draw(7, 3))
    assert not torch.equal(draw(7, 3), draw(7, 4))
    assert not torch.equal(draw(7, 3), draw(8, 3))
    src = noise_source(False, 7, 3, "cpu")
    assert (src.mode, src.seed) == ("seeded", 7)
    assert (noise_source(True, 7, 3, "cpu").mode, noise_source(True, 7, 3, "cpu").seed) == ("secure", 0)


def test_key_length_is_checked():
    with pytest.raises(ValueError, match="32-byte key"):
        SecureGaussian(b"short")
