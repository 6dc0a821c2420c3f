"""Resumable training checkpoints, written atomically so a crash never leaves a torn file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from reelgen.training.ema import EMA


def save_checkpoint(path: Path, config: dict, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: EMA) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": config, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA) -> tuple[dict, int]:
    """Restore in place; returns (the run's config, the step reached)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    ema.load_state_dict(state["ema"])
    return state["config"], state["step"]
