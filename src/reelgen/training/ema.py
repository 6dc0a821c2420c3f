"""Exponential moving average of weights (Polyak averaging), the weights we ship."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    # The decay ramps as (1 + n) / (warmup + n) after n updates, up to `decay`. It reaches 0.999 after
    # about 1000 * warmup updates: with 100 (before 2026-12-02) that was ~99k, more than any run here
    # took, and the shipped average spanned ~60 steps at 6k steps; with 10 it spans 1000 from ~9k on.
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 10):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # Ramp the decay up so early averages are not dominated by the random init.
        decay = min(self.decay, (1 + self.updates) / (self.warmup + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
