"""The seam between the service and the models: a Generator turns requests into frames.

Plain Python (no torch), so the API layer can read model specs without
loading a model; backends import torch only in their own modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from reelgen.pipelines.request import GenerationCancelled, GenerationRequest

__all__ = ["GenerationCancelled", "GenerationRequest", "GenerationResult", "Generator", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """What a served model can do, as the API and the renderer need to know it."""

    id: str  # the `model` value clients send
    description: str
    native_size: tuple[int, int]  # (width, height) the model generates
    fps: int  # native frame rate
    max_frames: int  # longest clip in native frames
    sizes: tuple[str, ...]  # accepted API `size` values ("WxH"): output is upscaled to these
    default_size: str
    default_seconds: str
    default_steps: int = 20
    default_guidance_scale: float = 5.0
    image_to_video: bool = False  # accepts input_reference as a first frame

    @property
    def seconds(self) -> tuple[str, ...]:
        """Accepted API `seconds` values: whole seconds that fit in max_frames."""
        return tuple(str(s) for s in range(1, self.max_frames // self.fps + 1))

    def frames_for(self, seconds: str) -> int:
        if seconds not in self.seconds:
            raise ValueError(f"seconds must be one of {', '.join(self.seconds)} for model {self.id}, got {seconds!r}")
        return int(seconds) * self.fps


@dataclass
class GenerationResult:
    frames: np.ndarray  # (B, F, H, W, 3) uint8 at native size
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: encode_text, denoise, decode


class Generator(Protocol):
    """A model that makes videos. One instance serves many requests, one batch at a time."""

    spec: ModelSpec

    def load(self) -> float:
        """Load weights once (later calls return at once); returns the seconds this call spent loading."""
        ...

    def generate(self, requests: list[GenerationRequest], *, on_step: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> GenerationResult:
        """Frames for a batch of compatible requests. `on_step(done, total)` after every denoising step;
        a set `cancel` raises GenerationCancelled within one step."""
        ...
