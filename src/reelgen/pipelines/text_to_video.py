"""Text to video with the built-in transformer: prompt in, uint8 frames out."""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reelgen.diffusion.guidance import guided_prediction
from reelgen.diffusion.pixels import model_to_frames
from reelgen.diffusion.schedule import SAMPLERS, make_scheduler
from reelgen.models.text_encoder import TextEmbedding, TextEncoder
from reelgen.models.transformer import VideoTransformer
from reelgen.pipelines.device import resolve_device
from reelgen.pipelines.request import GUIDANCE_WARN_ABOVE, SAMPLER_NAMES, GenerationCancelled, GenerationRequest

# The request module names samplers without importing diffusers; keep the two in step.
assert tuple(SAMPLERS) == SAMPLER_NAMES, "pipelines.request.SAMPLER_NAMES must list diffusion.schedule.SAMPLERS"

# (model, x, t, cond, uncond, scale: float or (B, 1, 1, 1, 1)) -> prediction, as diffusion.guidance.guided_prediction.
Guidance = Callable[[VideoTransformer, torch.Tensor, torch.Tensor, TextEmbedding, TextEmbedding, float | torch.Tensor],
                    torch.Tensor]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "builtin"


class TextToVideoPipeline:
    """Runs the denoising loop of a VideoTransformer conditioned on MiniLM text embeddings.

    The transformer runs on its parameters' device (`to(device)`); the text encoder stays on the CPU, where
    a few prompts a second cost little, and its cached embeddings move over per batch.
    """

    def __init__(self, model: VideoTransformer, text_encoder: TextEncoder, guidance: Guidance = guided_prediction):
        self.model = model.eval()
        self.text_encoder = text_encoder
        # guided_prediction's signature; parallel.CFGParallel puts its two passes on two ranks.
        self.guidance = guidance

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, text_encoder: TextEncoder | None = None,
                        device: str | torch.device = "cpu") -> "TextToVideoPipeline":
        device = resolve_device(device)  # before the weights load: an unavailable GPU fails at once
        model = VideoTransformer.from_pretrained(model_dir or DEFAULT_MODEL_DIR, device=device)
        return cls(model, text_encoder or TextEncoder())

    def to(self, device: str | torch.device) -> "TextToVideoPipeline":
        self.model.to(resolve_device(device))
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_frames(self) -> int:
        return self.model.cfg.frames

    @property
    def resolution(self) -> int:
        return self.model.cfg.resolution

    def __call__(self, requests: list[GenerationRequest], *, on_step: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None, progress: bool = False,
                 timings: dict[str, float] | None = None) -> np.ndarray:
        """Generate a batch of videos -> uint8 (B, F, H, W, 3), all or none.

        Requests in one batch must share frames, steps and sampler; each keeps
        its own prompt, negative prompt, seed and guidance scale.
        `on_step(done, total)` runs after every denoising step; setting `cancel`
        stops the loop before the next step with GenerationCancelled.
        `timings`, if given, receives seconds spent encoding text, denoising and decoding.
        """
        on_steps = [on_step] + [None] * (len(requests) - 1)  # once per step, not once per request
        videos = self.generate_each(requests, on_steps=on_steps, cancels=[cancel] * len(requests),
                                    progress=progress, timings=timings)
        if any(video is None for video in videos):
            raise GenerationCancelled("cancelled before the last denoising step")
        return np.stack(videos)

    @torch.no_grad()
    def generate_each(self, requests: list[GenerationRequest], *,
                      on_steps: Sequence[Callable[[int, int], None] | None] | None = None,
                      cancels: Sequence[threading.Event | None] | None = None, progress: bool = False,
                      timings: dict[str, float] | None = None) -> list[np.ndarray | None]:
        """Generate a batch of videos under per-request control -> per request uint8 (F, H, W, 3), or None
        for a request its cancel stopped.

        `on_steps[i](done, total)` runs after every step request i takes part in; once `cancels[i]` is set,
        request i leaves the batch before the next step and the others go on in a smaller batch. A request's
        video equals the one it gets alone up to the rounding of batched matmuls (within 1 grey level,
        tests/pipelines/test_batched.py); one batch composition, cancels included, gives the same videos bit for bit.
        """
        # 0. validate
        if not requests:
            raise ValueError("no requests to generate")
        for req in requests:
            req.check(self.max_frames)
        first = requests[0]
        if first.frames % self.model.cfg.patch_frames:
            raise ValueError(f"frames must be a multiple of {self.model.cfg.patch_frames} for this model "
                             f"(it patches that many frames together), got {first.frames}")
        shared = ("frames", "steps", "sampler")
        if any(getattr(r, k) != getattr(first, k) for r in requests for k in shared):
            raise ValueError(f"a batch must share {', '.join(shared)}")
        b = len(requests)
        on_steps = list(on_steps or [None] * b)
        cancels = list(cancels or [None] * b)
        if not len(on_steps) == len(cancels) == b:
            raise ValueError(f"{b} requests need {b} on_steps and cancels, got {len(on_steps)} and {len(cancels)}")
        if max(r.guidance_scale for r in requests) > GUIDANCE_WARN_ABOVE:
            warnings.warn(f"guidance scale above {GUIDANCE_WARN_ABOVE} usually oversaturates colours and freezes "
                          "motion", stacklevel=2)
        cfg, device = self.model.cfg, self.device

        clock = _Stopwatch(timings)

        # 1. encode prompts (cached per prompt)
        cond = self.text_encoder([r.prompt for r in requests]).to(device)
        uncond = self.text_encoder([r.negative_prompt for r in requests]).to(device)
        scales = torch.tensor([r.guidance_scale for r in requests], device=device)  # (B,)

        clock.lap("encode_text")

        # 2. timesteps: one scheduler per request. Samplers work elementwise, so a request takes exactly the
        # steps it would take alone, and leaves the batch with its own scheduler state (multistep history).
        schedulers = [make_scheduler(first.sampler) for _ in requests]
        for scheduler in schedulers:
            scheduler.set_timesteps(first.steps, device=device)

        # 3. initial noise, one generator per request so a video depends only on its own seed. Drawn on the
        # CPU and moved: a GPU's generator draws other numbers from the same seed, and the video would
        # depend on the device.
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        shape = (1, cfg.channels, first.frames, cfg.resolution, cfg.resolution)
        x = [torch.randn(shape, generator=g).to(device) * s.init_noise_sigma for g, s in zip(generators, schedulers)]
        # Stochastic samplers (ddpm) draw fresh noise per step; as diffusers' own pipelines
        # do, pass generators only to schedulers whose step takes them (diffusers' randn_tensor
        # draws on a CPU generator and moves the noise, as above).
        takes_generator = "generator" in inspect.signature(schedulers[0].step).parameters
        step_kwargs = [{"generator": g} if takes_generator else {} for g in generators]

        # 4. denoising loop over the requests still running
        active = list(range(b))
        timesteps = schedulers[0].timesteps
        total = len(timesteps)
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoising", unit="step")):
            active = [k for k in active if cancels[k] is None or not cancels[k].is_set()]
            if not active:
                break
            index = torch.tensor(active, device=device)
            x_in = torch.cat([schedulers[k].scale_model_input(x[k], t) for k in active])  # (A, C, F, H, W)
            tt = torch.full((len(active),), float(t), device=device)  # (A,)
            pred = self.predict(x_in, tt, cond[index], uncond[index], _scale(scales[index]))  # (A, C, F, H, W)
            for k, p in zip(active, pred.split(1)):
                x[k] = schedulers[k].step(p, t, x[k], **step_kwargs[k]).prev_sample  # (1, C, F, H, W)
            for k in active:
                if on_steps[k] is not None:
                    on_steps[k](i + 1, total)

        clock.lap("denoise")

        # 5. decode: pixel space, so only a colour-space conversion
        finished = set(active)
        videos = [model_to_frames(x[k], cfg.color_space)[0] if k in finished else None for k in range(b)]
        clock.lap("decode")
        return videos

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                scale: float | torch.Tensor) -> torch.Tensor:
        """The guided model prediction for latents x (B, C, F, H, W) at timesteps t (B,): one denoising step's work.
        `scale` is one guidance scale, or one per request shaped (B, 1, 1, 1, 1).

        Subclasses change how a step covers the clip (LongVideoPipeline: overlapping windows).
        """
        return self.guidance(self.model, x, t, cond, uncond, scale)


def _scale(scales: torch.Tensor) -> float | torch.Tensor:
    """Per-request guidance scales (B,) -> one float when they agree (the cheaper unguided pass stays possible
    at 1), else (B, 1, 1, 1, 1) to broadcast over the latents."""
    if bool((scales == scales[0]).all()):
        return float(scales[0])
    return scales.view(-1, 1, 1, 1, 1)


class _Stopwatch:
    """Adds the seconds since the previous lap to timings[name]; does nothing without a dict."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now
