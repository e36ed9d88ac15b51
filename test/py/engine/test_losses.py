"""The per-example losses as pure functions, on hand-made tensors (no model)."""
from __future__ import annotations

import math

import torch

from dpalign_worker.engine import losses


def test_causal_lm_loss_uses_previous_logits_and_mask():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0  # predicts token at t=1
    ids = torch.tensor([[1, 2, 3]])
    only_t1 = losses.causal_lm_loss(logits, ids, torch.tensor([[0, 1, 0]]))
    assert float(only_t1) < 1e-3
    only_t2 = losses.causal_lm_loss(logits, ids, torch.tensor([[0, 0, 1]]))
    assert math.isclose(float(only_t2), math.log(4), rel_tol=1e-6)
    assert float(losses.causal_lm_loss(logits, ids, torch.zeros(1, 3))) == 0.0


def test_pairwise_and_classification():
    r = losses.pairwise_reward_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(r, torch.tensor([-math.log(1 / (1 + math.exp(-2))), math.log(2)]))
    c = losses.classification_loss(torch.tensor([0.0, 100.0]), torch.tensor([1, 1]))
    torch.testing.assert_close(c, torch.tensor([math.log(2), 0.0]))


def test_ppo_loss_clipping_and_masking():
    old = torch.zeros(1, 3)
    lp = torch.tensor([[math.log(2.0), 0.0, 5.0]])  # ratio 2 -> clipped at 1.2 for positive advantage
    adv = torch.tensor([[1.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # last token is padding: ignored
    vals, old_v, ret = torch.tensor([[1.0, 0.0, 9.0]]), torch.zeros(1, 3), torch.zeros(1, 3)
    loss, m = losses.ppo_loss(lp, vals, old, old_v, adv, ret, mask, 0.2, 0.2, 0.5)
    # token 0: max(-2, -1.2) = -1.2 ; token 1: max(1, 1) = 1  -> mean -0.1
    torch.testing.assert_close(m["policy_loss"], torch.tensor([-0.1]))
    # value: token 0 max((1-0)^2, (0.2-0)^2) = 1 ; token 1: 0 -> 0.5 * mean = 0.25
    torch.testing.assert_close(m["value_loss"], torch.tensor([0.25]))
    torch.testing.assert_close(loss, torch.tensor([-0.1 + 0.5 * 0.25]))
    torch.testing.assert_close(m["clipfrac"], torch.tensor([0.5]))
    empty, _ = losses.ppo_loss(lp, vals, old, old_v, adv, ret, torch.zeros(1, 3), 0.2, 0.2, 0.5)
    assert float(empty) == 0.0
