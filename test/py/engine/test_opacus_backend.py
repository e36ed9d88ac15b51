"""The Opacus backend gives the same per-example gradients, and the same DP steps, as the builtin
one. Skipped only where Opacus is absent and ../shared/wheels does not hold it (see
opacus_required.py); the cross-check against Opacus's own clipping is test_opacus_crosscheck.py."""
from __future__ import annotations

import pytest
import torch

from opacus_required import require_opacus_module

require_opacus_module()

from conftest import lm_batch, make_model, pair_batch, perturb_lora, PPO, ppo_batch  # noqa: E402

from dpalign_worker.engine import opacus_backend  # noqa: E402
from dpalign_worker.engine.dp_step import DpConfig, train_step  # noqa: E402
from dpalign_worker.engine.models import build_model  # noqa: E402
from dpalign_worker.engine.objectives import get_objective  # noqa: E402
from dpalign_worker.engine.optim import OptimizerConfig  # noqa: E402
from dpalign_worker.engine.per_example import per_example_grads  # noqa: E402
from dpalign_worker.errors import WorkerError  # noqa: E402

from conftest import tiny_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.mark.parametrize("train_base", [False, True])
def test_opacus_matches_builtin(tok_dir, train_base):
    m = make_model(tok_dir, lora_rank=0 if train_base else 4, train_base=train_base)
    perturb_lora(m)
    obj = get_objective("causal_lm")
    batch = obj.prepare(lm_batch(4), m.pad_id)
    ref, _, _ = per_example_grads(m.model, obj, batch, m.trainable, None)
    got, _, _ = opacus_backend.per_example_grads(m.model, obj, batch, m.trainable, None)
    assert set(got) == set(ref)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-6, rtol=1e-5)


def test_opacus_ppo_with_value_head_matches_builtin(tok_dir):
    m = make_model(tok_dir, value_head=True)
    perturb_lora(m)
    obj = get_objective("ppo")
    batch = obj.prepare(ppo_batch(4), m.pad_id)
    ref, ref_l, _ = per_example_grads(m.model, obj, batch, m.trainable, PPO)
    got, got_l, _ = opacus_backend.per_example_grads(m.model, obj, batch, m.trainable, PPO)
    torch.testing.assert_close(got_l, ref_l, atol=1e-6, rtol=1e-5)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-6, rtol=1e-5)


def _pair(tok_dir, train_base):
    spec = tiny_config(tok_dir, lora_rank=0 if train_base else 4, train_base=train_base)
    return [build_model("m", spec, "cpu", OptimizerConfig("adamw", lr=1e-2), backend=b) for b in ("builtin", "opacus")]


@pytest.mark.parametrize("train_base", [False, True])
def test_dp_steps_through_the_opacus_backend_equal_builtin(tok_dir, train_base):
    """Seeded noise, micro-batches of 3, clipping that binds: the same weights after two steps."""
    ms = _pair(tok_dir, train_base)
    for m in ms:
        perturb_lora(m)
    dp = DpConfig(True, 0.5, 0.05, 7.0, False, 3)
    for step in range(2):
        reports = [train_step(m, "causal_lm", lm_batch(7, seed=step), dp, micro_batch_size=3, lr=1e-2) for m in ms]
        a, b = reports
        assert a.fraction_clipped == b.fraction_clipped and a.fraction_clipped > 0
        assert a.grad_norm_quantiles == pytest.approx(b.grad_norm_quantiles, rel=1e-5)
        assert a.noise_mode == b.noise_mode == "seeded"
    for (n, p), (n2, q) in zip(ms[0].model.named_parameters(), ms[1].model.named_parameters()):
        assert n == n2
        torch.testing.assert_close(q, p, atol=1e-6, rtol=1e-5)


def test_non_private_steps_leave_no_per_sample_state(tok_dir):
    m = _pair(tok_dir, True)[1]
    train_step(m, "causal_lm", lm_batch(4), DpConfig(True, 1.0, 1.0, 4.0, False, 1), lr=1e-3)
    train_step(m, "causal_lm", lm_batch(4), DpConfig(False), lr=1e-3)
    for p in m.trainable.values():
        assert getattr(p, "grad_sample", None) is None
    assert not any(getattr(mod, "activations", None) for mod in m.model.modules())


def test_opacus_refuses_losses_it_cannot_split_per_example(tok_dir):
    m = _pair(tok_dir, False)[1]
    with pytest.raises(WorkerError) as e:
        train_step(m, "pairwise_reward", pair_batch(2), DpConfig(True, 1.0, 1.0, 2.0, False, 1), lr=1e-3)
    assert "pairwise_reward" in e.value.message and "builtin" in e.value.message
