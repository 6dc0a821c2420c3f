"""Between uint8 video frames and the model's pixel space (RGB or CIE Lab, scaled to about [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch

# sRGB (D65) -> CIE XYZ, and the D65 white point.
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27
# Lab ranges mapped to about [-1, 1]: L in [0, 100], a and b in about [-110, 110].
_LAB_SCALE = torch.tensor([50.0, 110.0, 110.0])
_LAB_SHIFT = torch.tensor([1.0, 0.0, 0.0])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels last (..., 3) -> CIE Lab (..., 3)."""
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return torch.stack([L, a, b], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (..., 3) -> sRGB in [0, 1] (clipped to the gamut)."""
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], dim=-1)
    xyz = torch.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = (xyz @ torch.linalg.inv(_RGB_TO_XYZ).T).clamp(0, 1)
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055).clamp(0, 1)


def frames_to_model(frames: np.ndarray | torch.Tensor, color_space: str = "rgb") -> torch.Tensor:
    """uint8 (B, F, H, W, 3) -> float (B, 3, F, H, W) in the model's space."""
    x = torch.as_tensor(np.asarray(frames)).float() / 255  # (B, F, H, W, 3)
    if color_space == "lab":
        x = rgb_to_lab(x) / _LAB_SCALE - _LAB_SHIFT
    else:
        x = x * 2 - 1
    return x.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, F, H, W)


def model_to_frames(x: torch.Tensor, color_space: str = "rgb") -> np.ndarray:
    """float (B, 3, F, H, W) in the model's space -> uint8 (B, F, H, W, 3)."""
    x = x.detach().float().cpu().permute(0, 2, 3, 4, 1)  # (B, F, H, W, 3)
    if color_space == "lab":
        rgb = lab_to_rgb((x + _LAB_SHIFT) * _LAB_SCALE)
    else:
        rgb = (x.clamp(-1, 1) + 1) / 2
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8).numpy()
