"""The training objective: v-prediction MSE plus an optional temporal-consistency term."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from reelgen.models.text_encoder import TextEmbedding


@dataclass
class LossParts:
    total: torch.Tensor
    diffusion: torch.Tensor  # MSE between predicted and true v
    temporal: torch.Tensor  # MSE between frame-to-frame changes of predicted and true clean clips


def sample_timesteps(n: int, num_train_timesteps: int, *, shift: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """n training timesteps in [0, T), uniform for shift 1; shift > 1 draws noisier ones more often.

    The shift maps u ~ U(0, 1) to shift*u / (1 + (shift-1)*u), the timestep shift of
    Esser et al. 2024 (SD3). Where an object appears, its colour and its path are
    decided at high noise, where the text is all the model has; with few objects
    pixels, uniform timesteps spend little of the loss there.
    """
    if shift == 1.0:  # the draws of runs made before the shift existed, so their steps replay exactly
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator)  # (n,)
    shifted = shift * u / (1 + (shift - 1) * u)  # (n,)
    return (shifted * num_train_timesteps).long().clamp_max(num_train_timesteps - 1)


def diffusion_loss(model, x0: torch.Tensor, text: TextEmbedding, scheduler: DDPMScheduler, *,
                   temporal_weight: float = 0.0, timestep_shift: float = 1.0,
                   generator: torch.Generator | None = None) -> LossParts:
    """x0 (B, C, F, H, W) clean clips in model space.

    The temporal term compares frame differences of the model's clean-clip
    estimate x0_hat with those of x0. It penalizes flicker and wrong motion
    directly, which the per-pixel v loss only sees through many pixels at once.
    """
    b = x0.shape[0]
    t = sample_timesteps(b, scheduler.config.num_train_timesteps, shift=timestep_shift, generator=generator)  # (B,)
    noise = torch.randn(x0.shape, generator=generator)  # (B, C, F, H, W)
    xt = scheduler.add_noise(x0, noise, t)  # (B, C, F, H, W)
    target = scheduler.get_velocity(x0, noise, t)  # (B, C, F, H, W)
    pred = model(xt, t.float(), text.tokens, text.mask, text.pooled).float()  # (B, C, F, H, W)
    diffusion = torch.mean((pred - target) ** 2)
    temporal = torch.zeros(())
    if temporal_weight > 0:
        ab = scheduler.alphas_cumprod[t].view(b, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        x0_hat = ab.sqrt() * xt - (1 - ab).sqrt() * pred  # (B, C, F, H, W)
        temporal = torch.mean((x0_hat.diff(dim=2) - x0.diff(dim=2)) ** 2)
    return LossParts(diffusion + temporal_weight * temporal, diffusion, temporal)
