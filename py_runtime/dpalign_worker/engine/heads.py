"""Scalar heads on the last hidden state: the PPO value head and the reward-model head."""
from __future__ import annotations

import torch
from torch import nn


class ScalarHead(nn.Module):
    """hidden [..., H] -> scalar [...]."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)

    def reset(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            std = 1.0 / (self.proj.in_features + 1) ** 0.5
            w = torch.randn(self.proj.weight.shape, generator=generator) * std
            self.proj.weight.copy_(w.to(self.proj.weight))
            self.proj.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1)
