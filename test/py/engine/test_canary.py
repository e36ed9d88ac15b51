"""The dirac_canary objective of privacy audits (ts/audit): each example's gradient is the fixed
Dirac vector -scale * e_index over the flattened trainable parameters, and the unchanged DP step
clips it to C, sums, adds noise and scales like any other objective's."""
from __future__ import annotations

import pytest
import torch
from conftest import make_model

from dpalign_worker.engine.dp_step import DpConfig, train_step
from dpalign_worker.engine.objectives import get_objective
from dpalign_worker.engine.per_example import per_example_grads
from dpalign_worker.errors import WorkerError
from dpalign_worker.protocol import worker_pb2 as pb


def flat(m) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in m.trainable.values()])


def flat_grads(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten(1) for g in grads.values()], 1)


@pytest.mark.parametrize("kw", [dict(lora_rank=0, train_base=True), dict(lora_rank=4, value_head=True)])
def test_per_example_gradient_is_the_dirac_vector(tok_dir, kw):
    m = make_model(tok_dir, optimizer="sgd", **kw)
    p = flat(m).numel()
    idx = torch.tensor([0, 17, p - 1, 17])
    scale = torch.tensor([3.0, 10.0, -2.0, 0.5])
    obj = get_objective("dirac_canary")
    grads, losses, _ = per_example_grads(m.model, obj, obj.prepare({"canary_index": idx, "canary_scale": scale}, m.pad_id),
                                         m.trainable, None)
    g = flat_grads(grads)
    expected = torch.zeros(4, p)
    expected[torch.arange(4), idx] = -scale
    assert torch.equal(g, expected)
    torch.testing.assert_close(losses, -scale * flat(m)[idx])
    # without canary_scale every canary has norm 1
    grads, _, _ = per_example_grads(m.model, obj, obj.prepare({"canary_index": idx[:2]}, m.pad_id), m.trainable, None)
    assert torch.equal(flat_grads(grads).norm(dim=1), torch.ones(2))


def test_dp_step_clips_each_canary_to_c(tok_dir):
    # sigma = 0, DP-SGD with lr 1: the update is exactly sum_i clip(g_i) / (q N)
    m = make_model(tok_dir, optimizer="sgd", lora_rank=0, train_base=True)
    before = flat(m)
    idx = torch.tensor([3, 8, 100, 2000])
    scale = torch.tensor([10.0, 10.0, 0.25, 4.0])
    c, qn = 1.5, 2.0
    r = train_step(m, "dirac_canary", {"canary_index": idx, "canary_scale": scale}, DpConfig(True, 0.0, c, qn, True), lr=1.0)
    change = flat(m) - before
    expected = torch.zeros_like(change)
    expected[idx] = torch.minimum(scale, torch.tensor(c)) / qn  # loss -scale*theta: the update raises theta
    torch.testing.assert_close(change, expected, atol=1e-6, rtol=0)
    assert r.examples == 4 and r.fraction_clipped == pytest.approx(0.75)
    assert r.grad_norm_quantiles[0] == pytest.approx(0.25) and r.grad_norm_quantiles[-1] == pytest.approx(10.0)


def test_canaries_on_one_coordinate_add_up_and_noise_is_sigma_c(tok_dir):
    m = make_model(tok_dir, optimizer="sgd", lora_rank=0, train_base=True)
    before = flat(m)
    sigma, c, qn = 2.0, 0.5, 4.0
    r = train_step(m, "dirac_canary", {"canary_index": torch.tensor([5, 5, 5]), "canary_scale": torch.full((3,), 100.0)},
                   DpConfig(True, sigma, c, qn, False, 3), lr=1.0)
    change = (flat(m) - before) * qn  # sum of clipped gradients + noise, in the worker's units
    others = torch.cat([change[:5], change[6:]])
    assert abs(float(others.std()) / (sigma * c) - 1) < 0.05  # noise std sigma*C on every coordinate
    assert r.noise_std == pytest.approx(sigma * c) and r.fraction_clipped == 1.0
    assert abs(float(change[5]) - 3 * c) < 6 * sigma * c  # three clipped contributions plus one noise draw


def test_empty_batch_and_nonprivate_step(tok_dir):
    m = make_model(tok_dir, optimizer="sgd", lora_rank=0, train_base=True)
    r = train_step(m, "dirac_canary", {}, DpConfig(True, 1.0, 1.0, 1.0, True), lr=1.0)
    assert r.examples == 0 and r.noise_mode == "secure"
    before = flat(m)
    train_step(m, "dirac_canary", {"canary_index": torch.tensor([7, 9])}, DpConfig(False, 0, 0, 0), lr=1.0)
    change = flat(m) - before
    assert change[7] == pytest.approx(0.5) and change[9] == pytest.approx(0.5)  # mean over the batch
    assert int((change != 0).sum()) == 2


@pytest.mark.parametrize("batch,match", [
    ({"canary_scale": torch.ones(2)}, "needs tensors"),
    ({"canary_index": torch.tensor([0.0, 1.0])}, "integer"),
    ({"canary_index": torch.tensor([[0, 1]])}, "integer tensor"),
    ({"canary_index": torch.tensor([0, -1])}, ">= 0"),
    ({"canary_index": torch.tensor([0, 1]), "canary_scale": torch.ones(3)}, "first dimension"),
    ({"canary_index": torch.tensor([0, 1]), "canary_scale": torch.tensor([1.0, float("nan")])}, "finite"),
    ({"canary_index": torch.tensor([0, 10**9])}, "out of range"),
])
def test_bad_batches_are_invalid_arguments(tok_dir, batch, match):
    m = make_model(tok_dir, optimizer="sgd", lora_rank=0, train_base=True)
    with pytest.raises(WorkerError, match=match) as e:
        train_step(m, "dirac_canary", batch, DpConfig(True, 1.0, 1.0, 2.0, True), lr=1.0)
    assert e.value.code == pb.INVALID_ARGUMENT
