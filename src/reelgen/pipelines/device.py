"""Which device a pipeline runs on, checked before any weights load."""

from __future__ import annotations

import torch

DEVICES = "cpu, cuda, cuda:N, mps or xpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu' -> torch.device; ValueError naming what this machine lacks."""
    try:
        resolved = torch.device(device)
    except RuntimeError:  # torch's own message lists every backend it was built with
        raise ValueError(f"unknown device {str(device)!r}; use {DEVICES}") from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if resolved.type not in available:  # meta, for one, holds no data to make a video from
        raise ValueError(f"unknown device {str(device)!r}; use {DEVICES}")
    if not available[resolved.type]():
        raise ValueError(f"{str(device)!r} is not available on this machine (torch {torch.__version__})")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"{str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved
