"""The Python API in two calls: `generate` a clip, `save` it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from reelgen.pipelines.request import DEFAULT_SAMPLER, GenerationRequest


@lru_cache(maxsize=2)
def _pipeline(model_dir: str | None):
    from reelgen.pipelines.text_to_video import TextToVideoPipeline

    return TextToVideoPipeline.from_pretrained(model_dir)


def generate(prompt: str, *, negative_prompt: str = "", seed: int = 0, frames: int = 16, steps: int = 20,
             guidance_scale: float = 5.0, sampler: str = DEFAULT_SAMPLER, model_dir: str | Path | None = None,
             progress: bool = False) -> np.ndarray:
    """A clip from the built-in model (or the model in `model_dir`) -> uint8 frames (F, H, W, 3).

    The model loads on the first call and stays loaded for the next ones.
    """
    request = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, frames=frames,
                                steps=steps, guidance_scale=guidance_scale, sampler=sampler)
    pipeline = _pipeline(None if model_dir is None else str(model_dir))
    return pipeline([request], progress=progress)[0]


def save(frames: np.ndarray, path: str | Path, *, fps: int = 8, min_side: int = 256) -> Path:
    """Write frames as .mp4 (H.264), .webm, .gif, or a folder of PNGs, upscaled to min_side."""
    from reelgen.rendering.video import write_video

    return write_video(frames, path, fps=fps, min_side=min_side)
