"""Classifier-free guidance (Ho & Salimans, 2022), with both passes in one batch."""

from __future__ import annotations

import torch

from reelgen.models.text_encoder import TextEmbedding


def guided_prediction(model, x: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                      scale: float | torch.Tensor) -> torch.Tensor:
    """x (B, C, F, H, W), t (B,) -> uncond + scale * (cond - uncond), shape of x.

    `scale` is one float, or one per request shaped (B, 1, 1, 1, 1) (a batch of requests with their own scales).

    The conditional and unconditional passes run as one batch of 2B: one
    forward instead of two, and larger, more efficient matmuls.
    """
    if not isinstance(scale, torch.Tensor) and scale == 1.0:  # guidance off: the unconditional pass would cancel out
        return model(x, t, cond.tokens, cond.mask, cond.pooled)
    both = TextEmbedding.cat([cond, uncond])
    out = model(torch.cat([x, x]), torch.cat([t, t]), both.tokens, both.mask, both.pooled)  # (2B, C, F, H, W)
    c, u = out.chunk(2)  # 2 x (B, C, F, H, W)
    return u + scale * (c - u)
