"""The DP step's stages: clipping, noise, scaling by q*N, micro-batching, frozen base weights."""
from __future__ import annotations

import pytest
import torch
from conftest import PPO, lm_batch, make_model, perturb_lora, ppo_batch

from dpalign_worker.engine import dp_step
from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.engine.objectives import get_objective
from dpalign_worker.engine.per_example import per_example_grads
from dpalign_worker.errors import WorkerError


def snapshot(m):
    return {n: p.detach().clone() for n, p in m.model.named_parameters()}


def test_clip_bounds_norms_and_keeps_small_examples(tok_dir):
    m = make_model(tok_dir, value_head=True)
    perturb_lora(m)
    obj = get_objective("causal_lm")
    grads, _, _ = per_example_grads(m.model, obj, obj.prepare(lm_batch(6), m.pad_id), m.trainable, None)
    norms = dp_step.per_example_norms(grads)
    c = float(norms.median())  # half the examples above C, half below
    factors, norms2 = dp_step.clip_per_example(grads, c)
    clipped = {n: g * factors.view(-1, *[1] * (g.dim() - 1)) for n, g in grads.items()}
    new_norms = dp_step.per_example_norms(clipped)
    assert torch.all(new_norms <= c * (1 + 1e-5))
    small = norms2 <= c
    assert small.any() and (~small).any()
    for n in grads:
        assert torch.equal(clipped[n][small], grads[n][small])  # unclipped examples unchanged, bit for bit


def test_noise_std_is_sigma_c_over_expected_batch_size(tok_dir):
    # Empty logical batch, SGD with lr 1: the update is exactly -noise / (q N).
    m = make_model(tok_dir, optimizer="sgd", lora_rank=8, value_head=True)
    before = snapshot(m)
    sigma, c, qn = 1.3, 0.7, 4.0
    r = train_step(m, "causal_lm", lm_batch(0), DpConfig(True, sigma, c, qn, False, 11), lr=1.0)
    delta = torch.cat([(before[n] - p.detach()).flatten() for n, p in m.trainable.items()])
    assert delta.numel() > 2000
    expected = sigma * c / qn
    assert abs(float(delta.std()) / expected - 1) < 0.08
    assert abs(float(delta.mean())) < 4 * expected / delta.numel() ** 0.5
    assert r.examples == 0 and r.loss == 0.0 and r.noise_std == pytest.approx(sigma * c)
    assert r.noise_mode == "seeded" and r.noise_seed == 11 and r.dp


def test_secure_noise_std_is_sigma_c_over_expected_batch_size(tok_dir):
    # as above, with the secure (AES-CTR) source: same scale, no bias, reported as "secure"
    m = make_model(tok_dir, optimizer="sgd", lora_rank=8, value_head=True)
    before = snapshot(m)
    sigma, c, qn = 0.9, 1.1, 3.0
    r = train_step(m, "causal_lm", lm_batch(0), DpConfig(True, sigma, c, qn, True, 11), lr=1.0)
    delta = torch.cat([(before[n] - p.detach()).flatten() for n, p in m.trainable.items()])
    expected = sigma * c / qn
    assert abs(float(delta.std()) / expected - 1) < 0.08
    assert abs(float(delta.mean())) < 4 * expected / delta.numel() ** 0.5
    assert r.noise_mode == "secure" and r.noise_seed == 0 and r.noise_std == pytest.approx(sigma * c)
    assert all(p.dtype == torch.float32 for p in m.trainable.values())


def test_two_secure_steps_draw_different_noise_and_seeded_steps_repeat(tok_dir):
    def noise_of_two_steps(secure: bool):
        m = make_model(tok_dir, optimizer="sgd")
        out = []
        for _ in range(2):
            before = snapshot(m)
            train_step(m, "causal_lm", lm_batch(0), DpConfig(True, 1.0, 1.0, 1.0, secure, 5), lr=1.0)
            out.append(torch.cat([(before[n] - p.detach()).flatten() for n, p in m.trainable.items()]))
        return out
    s1, s2 = noise_of_two_steps(True)
    assert not torch.allclose(s1, s2)
    a, b = noise_of_two_steps(False), noise_of_two_steps(False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same seed, same step: same noise
    assert not torch.allclose(a[0], a[1])  # the step number enters the seed


def test_zero_sigma_adds_no_noise_and_scales_by_expected_batch_size(tok_dir):
    m = make_model(tok_dir, optimizer="sgd", value_head=True)
    perturb_lora(m)
    obj = get_objective("ppo")
    raw = ppo_batch(5, seed=2)
    grads, _, _ = per_example_grads(m.model, obj, obj.prepare(raw, m.pad_id), m.trainable, PPO)
    c, qn = 0.3, 7.5
    factors, _ = dp_step.clip_per_example(grads, c)
    expected = {n: torch.einsum("b,b...->...", factors, g) / qn for n, g in grads.items()}
    before = snapshot(m)
    r = train_step(m, "ppo", raw, DpConfig(True, 0.0, c, qn, True), lr=1.0, loss_params=PPO)
    assert r.noise_mode == "none" and r.noise_std == 0.0
    for n, p in m.trainable.items():
        torch.testing.assert_close(before[n] - p.detach(), expected[n], atol=1e-6, rtol=1e-5)
    assert set(r.metrics) >= {"policy_loss", "value_loss", "clipfrac", "approx_kl"}


@pytest.mark.parametrize("loss,make", [("causal_lm", lm_batch), ("ppo", ppo_batch)])
def test_micro_batches_do_not_change_the_update(tok_dir, loss, make):
    results = []
    for micro in (0, 2, 3):
        m = make_model(tok_dir, value_head=True)
        perturb_lora(m)
        r = train_step(m, loss, make(7, seed=4), DpConfig(True, 0.8, 0.05, 7.0, False, 5), micro, lr=1e-2,
                       loss_params=PPO if loss == "ppo" else None)
        results.append((r, {n: p.detach().clone() for n, p in m.trainable.items()}))
    (r0, p0) = results[0]
    for r, p in results[1:]:
        for n in p0:
            torch.testing.assert_close(p[n], p0[n], atol=1e-6, rtol=1e-5)
        assert r.fraction_clipped == r0.fraction_clipped
        assert r.grad_norm_quantiles == pytest.approx(r0.grad_norm_quantiles, rel=1e-4)
        assert r.loss == pytest.approx(r0.loss, rel=1e-5)


def test_only_lora_and_heads_change(tok_dir):
    m = make_model(tok_dir, value_head=True)
    before = snapshot(m)
    for i in range(2):
        train_step(m, "ppo", ppo_batch(4, seed=i), DpConfig(True, 1.0, 1.0, 4.0, True), 2, lr=1e-2, loss_params=PPO)
        train_step(m, "causal_lm", lm_batch(4, seed=i), DpConfig(False, 0, 0, 0), 0, lr=1e-2)
    for n, p in m.model.named_parameters():
        if n in m.trainable:
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n  # bit-identical base
    assert m.step == 4


def test_secure_noise_differs_between_runs(tok_dir):
    outs = []
    for _ in range(2):
        m = make_model(tok_dir)
        r = train_step(m, "causal_lm", lm_batch(0), DpConfig(True, 1.0, 1.0, 1.0, True, 5), lr=1.0)
        assert r.noise_mode == "secure" and r.noise_seed == 0
        outs.append(torch.cat([p.detach().flatten() for p in m.trainable.values()]))
    assert not torch.equal(outs[0], outs[1])


def test_nonprivate_mean_gradient_and_clipping(tok_dir):
    m = make_model(tok_dir, optimizer="sgd")
    perturb_lora(m)
    raw = lm_batch(4, seed=9)
    obj = get_objective("causal_lm")
    grads, _, _ = per_example_grads(m.model, obj, obj.prepare(raw, m.pad_id), m.trainable, None)
    mean = {n: g.mean(0) for n, g in grads.items()}
    norm = float(torch.sqrt(sum(g.pow(2).sum() for g in mean.values())))
    before = snapshot(m)
    r = train_step(m, "causal_lm", raw, DpConfig(False, 0, norm / 2, 0), 3, lr=1.0)
    assert r.noise_mode == "none" and not r.dp and r.fraction_clipped == 1.0
    assert r.grad_norm_quantiles[0] == pytest.approx(norm, rel=1e-4)
    for n, p in m.trainable.items():
        torch.testing.assert_close(before[n] - p.detach(), mean[n] / 2, atol=1e-6, rtol=1e-4)


def test_invalid_requests(tok_dir):
    m = make_model(tok_dir)
    with pytest.raises(WorkerError, match="unknown loss"):
        train_step(m, "dpo", lm_batch(2), DpConfig(False))
    with pytest.raises(WorkerError, match="expected_batch_size"):
        train_step(m, "causal_lm", lm_batch(2), DpConfig(True, 1.0, 1.0, 0.0))
    with pytest.raises(WorkerError, match="missing"):
        train_step(m, "causal_lm", {"input_ids": torch.zeros(2, 3, dtype=torch.long)}, DpConfig(False))
    frozen = make_model(tok_dir, optimizer=None)
    with pytest.raises(WorkerError, match="without an optimizer"):
        train_step(frozen, "causal_lm", lm_batch(2), DpConfig(False))


def test_secure_noise_is_one_draw_over_all_tensors_with_std_sigma_c():
    """add_noise draws secure noise for every trainable tensor at once; each coordinate still gets
    its own N(0, std^2) (no tensor repeats another's values)."""
    from dpalign_worker.engine.dp_step import add_noise
    from dpalign_worker.engine.noise import SecureGaussian

    acc = {"a": torch.zeros(40_000), "b": torch.zeros(200, 100), "c": torch.zeros(3, 5, 7)}
    add_noise(acc, 2.5, SecureGaussian())
    allv = torch.cat([g.reshape(-1) for g in acc.values()]).double()
    assert abs(float(allv.std()) / 2.5 - 1) < 0.02 and abs(float(allv.mean())) < 0.03
    for g in acc.values():
        assert abs(float(g.double().std()) / 2.5 - 1) < 0.2
    assert not torch.equal(acc["a"][:20_000].view(200, 100), acc["b"])
    assert acc["c"].shape == (3, 5, 7)
