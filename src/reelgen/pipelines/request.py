"""What one video asks for. Plain Python (no torch), so the API layer can build and check it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SAMPLER = "dpm++"
SAMPLER_NAMES = ("ddim", "dpm++", "unipc", "euler", "ddpm")  # the keys of diffusion.schedule.SAMPLERS
MAX_STEPS = 200
GUIDANCE_WARN_ABOVE = 10.0


class GenerationCancelled(Exception):
    """Raised inside a denoising loop when the caller's cancel event is set."""


@dataclass
class GenerationRequest:
    """One video's settings; a pipeline validates them before any work starts."""

    prompt: str
    negative_prompt: str = ""  # the unconditional branch of guidance; "" = plain CFG
    seed: int = 0  # the video depends only on its own seed, even inside a batch
    frames: int = 16  # native frames to generate
    steps: int = 20  # denoising steps
    guidance_scale: float = 5.0  # classifier-free guidance; 1 turns it off
    sampler: str = DEFAULT_SAMPLER  # a name from SAMPLER_NAMES
    size: tuple[int, int] | None = None  # (width, height) to generate, one of the model's sizes; None: its default
    image: bytes | None = None  # first frame for image-to-video: PNG/JPEG/WebP bytes (backends.images checks them)

    def check(self, max_frames: int) -> None:
        """Raise ValueError with one clear message on settings no model can honour."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if not 2 <= self.frames <= max_frames:
            raise ValueError(f"frames must be between 2 and {max_frames} for this model, got {self.frames}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not self.guidance_scale >= 0:  # also rejects NaN
            raise ValueError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
