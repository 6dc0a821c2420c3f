"""Tiny seeded models for tests, as diffusers' tests build them."""

import torch


def make_tiny_model(seed: int = 0, patch_frames: int = 1):
    """The 'test' preset with small random weights everywhere (adaLN-Zero would otherwise output zeros)."""
    from dataclasses import replace

    from reelgen.models.transformer import PRESETS, VideoTransformer

    torch.manual_seed(seed)
    model = VideoTransformer(replace(PRESETS["test"], patch_frames=patch_frames))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()
