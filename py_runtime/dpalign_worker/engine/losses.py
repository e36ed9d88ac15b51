"""Per-example losses as pure functions of tensors: every function returns a loss of shape [B]
(one value per example), so the same code serves vmap (B = 1 per call), batched non-private steps
and tests. Shapes: B examples, L sequence length, T response length, V vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask [B, T] -> [B]: mean over each row's masked entries (0 for a row without any)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V], targets [B, T] -> log p(target) [B, T] (float32)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """SFT loss: logits [B, L, V], input_ids [B, L], loss_mask [B, L] (1 where token t is a target;
    the prediction of t uses logits at t-1). Mean negative log-likelihood over targets -> [B]."""
    # log-softmax over all positions, then drop the last: avoids copying a non-contiguous slice
    lp = torch.log_softmax(logits.float(), dim=-1)[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return -masked_mean(lp, loss_mask[:, 1:].to(lp.dtype))


def classification_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary classifier: scores [B] (logit of class 1), labels [B] in {0, 1} -> BCE [B]."""
    return F.binary_cross_entropy_with_logits(scores.float(), labels.to(torch.float32), reduction="none")


def pairwise_reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of the paper, one preference pair per example: -log sigmoid(r(chosen) - r(rejected)) [B]."""
    return -F.logsigmoid(r_chosen.float() - r_rejected.float())


def ppo_loss(
    logprobs: torch.Tensor,
    values: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    clip_range_value: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO policy loss plus vf_coef * clipped value loss (as TRL), every input [B, T] over
    response tokens, mask [B, T] 1 on real response tokens. Advantages and returns come from the
    control plane (no batch whitening here: each example's loss depends on that example only).
    Returns loss [B] and per-example metrics {policy_loss, value_loss, clipfrac, approx_kl} [B]."""
    mask = mask.to(logprobs.dtype)
    v_clipped = torch.clamp(values, old_values - clip_range_value, old_values + clip_range_value)
    vf_losses = torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    value_loss = 0.5 * masked_mean(vf_losses, mask)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = masked_mean(torch.maximum(pg1, pg2), mask)
    loss = policy_loss + vf_coef * value_loss
    metrics = {
        "policy_loss": policy_loss.detach(),
        "value_loss": value_loss.detach(),
        "clipfrac": masked_mean((pg2 > pg1).to(mask.dtype), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask),
    }
    return loss, metrics


def dirac_canary_loss(flat_params: torch.Tensor, index: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """White-box audit canary (Steinke, Nasr, Jagielski 2023): flat_params [P] (the trainable
    parameters flattened in order), index [B] int64, scale [B] -> -scale * flat_params[index] [B].
    Linear in the parameters, so example b's gradient is the constant -scale_b * e_{index_b}: a
    Dirac vector of norm |scale_b| that does not depend on the model's state."""
    return -scale.to(flat_params.dtype) * flat_params[index]
