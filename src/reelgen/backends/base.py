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

from reelgen.pipelines.request import DEFAULT_SAMPLER, SAMPLER_NAMES, GenerationCancelled, GenerationRequest

__all__ = ["BatchGenerator", "BatchResult", "GenerationCancelled", "GenerationRequest", "GenerationResult", "Generator",
           "ModelSpec", "runs_batches"]


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
    requires_image: bool = False  # every request needs input_reference (image-only models such as SVD)
    # Valid frame counts are frames_step * k + frames_offset (Wan: 4k+1), from 2 up to max_frames.
    frames_step: int = 1
    frames_offset: int = 0
    samplers: tuple[str, ...] = SAMPLER_NAMES  # the request `sampler` values this model runs
    default_sampler: str = DEFAULT_SAMPLER  # when a request names none

    @property
    def seconds(self) -> tuple[str, ...]:
        """Accepted API `seconds` values: whole seconds that fit in max_frames."""
        return tuple(str(s) for s in range(1, self.max_frames // self.fps + 1))

    def frames_for(self, seconds: str) -> int:
        """Native frames for an API `seconds` value: seconds * fps, rounded up to a valid count (within max_frames)."""
        if seconds not in self.seconds:
            raise ValueError(f"seconds must be one of {', '.join(self.seconds)} for model {self.id}, got {seconds!r}")
        want = int(seconds) * self.fps
        k = -(-(want - self.frames_offset) // self.frames_step)  # ceil
        return min(k * self.frames_step + self.frames_offset, self.frame_counts()[-1])

    def frame_counts(self) -> list[int]:
        """Every frame count the model can generate, ascending."""
        first = max(2, self.frames_offset)
        first += -(first - self.frames_offset) % self.frames_step
        return list(range(first, self.max_frames + 1, self.frames_step))

    def check_sampler(self, sampler: str) -> None:
        """Raise ValueError naming the samplers this model runs when it cannot run `sampler`."""
        if sampler not in self.samplers:
            raise ValueError(f"model {self.id} runs the sampler(s) {', '.join(self.samplers)}, got {sampler!r} "
                             "(its denoiser was trained for those schedules only)")

    def check_frames(self, frames: int) -> None:
        """Raise ValueError naming the allowed counts when the model cannot generate `frames` frames."""
        counts = self.frame_counts()
        if frames not in counts:
            step, offset = self.frames_step, self.frames_offset
            rule = "" if step == 1 else f" ({step}k+{offset})" if offset else f" (multiples of {step})"
            shown = ", ".join(map(str, counts)) if len(counts) <= 12 else \
                f"{', '.join(map(str, counts[:4]))}, ..., {', '.join(map(str, counts[-2:]))}"
            raise ValueError(f"model {self.id} generates {shown} frames{rule}, got {frames}")


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


@dataclass
class BatchResult:
    videos: list[np.ndarray | None]  # per request: (F, H, W, 3) uint8 at native size, None if its cancel stopped it
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of the whole batch


class BatchGenerator(Generator, Protocol):
    """A Generator that runs compatible requests (one model, size, frames, steps and sampler) as one batched
    denoising pass, each request under its own control."""

    def generate_each(self, requests: list[GenerationRequest], *,
                      on_steps: list[Callable[[int, int], None] | None],
                      cancels: list[threading.Event | None]) -> BatchResult:
        """`on_steps[i](done, total)` after every step request i takes part in; a set `cancels[i]` takes request
        i out of the batch before the next step (its video is None) while the others go on."""
        ...


def runs_batches(generator: Generator) -> bool:
    """Whether the service may hand this generator several jobs at once; other generators get one at a time."""
    return callable(getattr(generator, "generate_each", None))
