"""Text to video with the built-in transformer: prompt in, uint8 frames out."""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reelgen.diffusion.guidance import guided_prediction
from reelgen.diffusion.pixels import model_to_frames
from reelgen.diffusion.schedule import SAMPLERS, make_scheduler
from reelgen.models.text_encoder import TextEmbedding, TextEncoder
from reelgen.models.transformer import VideoTransformer
from reelgen.pipelines.request import GUIDANCE_WARN_ABOVE, SAMPLER_NAMES, GenerationCancelled, GenerationRequest

# The request module names samplers without importing diffusers; keep the two in step.
assert tuple(SAMPLERS) == SAMPLER_NAMES, "pipelines.request.SAMPLER_NAMES must list diffusion.schedule.SAMPLERS"

# (model, x, t, cond, uncond, scale) -> prediction, as diffusion.guidance.guided_prediction.
Guidance = Callable[[VideoTransformer, torch.Tensor, torch.Tensor, TextEmbedding, TextEmbedding, float], torch.Tensor]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "builtin"


class TextToVideoPipeline:
    """Runs the denoising loop of a VideoTransformer conditioned on MiniLM text embeddings."""

    def __init__(self, model: VideoTransformer, text_encoder: TextEncoder, guidance: Guidance = guided_prediction):
        self.model = model.eval()
        self.text_encoder = text_encoder
        # guided_prediction's signature; parallel.CFGParallel puts its two passes on two ranks.
        self.guidance = guidance

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None,
                        text_encoder: TextEncoder | None = None) -> "TextToVideoPipeline":
        model = VideoTransformer.from_pretrained(model_dir or DEFAULT_MODEL_DIR)
        return cls(model, text_encoder or TextEncoder())

    @property
    def max_frames(self) -> int:
        return self.model.cfg.frames

    @property
    def resolution(self) -> int:
        return self.model.cfg.resolution

    @torch.no_grad()
    def __call__(self, requests: list[GenerationRequest], *, on_step: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None, progress: bool = False,
                 timings: dict[str, float] | None = None) -> np.ndarray:
        """Generate a batch of videos -> uint8 (B, F, H, W, 3).

        Requests in one batch must share frames, steps, sampler and guidance
        scale; each keeps its own prompt, negative prompt and seed.
        `on_step(done, total)` runs after every denoising step; setting `cancel`
        stops the loop before the next step with GenerationCancelled.
        `timings`, if given, receives seconds spent encoding text, denoising and decoding.
        """
        # 0. validate
        if not requests:
            raise ValueError("no requests to generate")
        for req in requests:
            req.check(self.max_frames)
        first = requests[0]
        shared = ("frames", "steps", "sampler", "guidance_scale")
        if any(getattr(r, k) != getattr(first, k) for r in requests for k in shared):
            raise ValueError(f"a batch must share {', '.join(shared)}")
        if first.guidance_scale > GUIDANCE_WARN_ABOVE:
            warnings.warn(f"guidance scale {first.guidance_scale} > {GUIDANCE_WARN_ABOVE} usually "
                          "oversaturates colours and freezes motion", stacklevel=2)
        cfg = self.model.cfg
        b = len(requests)

        clock = _Stopwatch(timings)

        # 1. encode prompts (cached per prompt)
        cond = self.text_encoder([r.prompt for r in requests])
        uncond = self.text_encoder([r.negative_prompt for r in requests])

        clock.lap("encode_text")

        # 2. timesteps
        scheduler = make_scheduler(first.sampler)
        scheduler.set_timesteps(first.steps)

        # 3. initial noise, one generator per request so a video depends only on its own seed
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        shape = (cfg.channels, first.frames, cfg.resolution, cfg.resolution)
        x = torch.stack([torch.randn(shape, generator=g) for g in generators])  # (B, C, F, H, W)
        x = x * scheduler.init_noise_sigma
        # Stochastic samplers (euler_a, ddpm) draw fresh noise per step; as diffusers'
        # own pipelines do, pass generators only to schedulers whose step takes them.
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = generators if b > 1 else generators[0]

        # 4. denoising loop
        total = len(scheduler.timesteps)
        for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="denoising", unit="step")):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"cancelled before step {i + 1} of {total}")
            x_in = scheduler.scale_model_input(x, t)  # (B, C, F, H, W)
            tt = torch.full((b,), float(t))  # (B,)
            pred = self.predict(x_in, tt, cond, uncond, first.guidance_scale)  # (B, C, F, H, W)
            x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
            if on_step is not None:
                on_step(i + 1, total)

        clock.lap("denoise")

        # 5. decode: pixel space, so only a colour-space conversion
        frames = model_to_frames(x, cfg.color_space)  # (B, F, H, W, 3)
        clock.lap("decode")
        return frames

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                scale: float) -> torch.Tensor:
        """The guided model prediction for latents x (B, C, F, H, W) at timesteps t (B,): one denoising step's work.

        Subclasses change how a step covers the clip (LongVideoPipeline: overlapping windows).
        """
        return self.guidance(self.model, x, t, cond, uncond, scale)


class _Stopwatch:
    """Adds the seconds since the previous lap to timings[name]; does nothing without a dict."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now
