"""Open video models through diffusers as a Generator: Wan, CogVideoX, LTX-Video, HunyuanVideo, SVD.

One `DiffusersGenerator` serves one pipeline folder (diffusers format) with the memory options of its
registry entry. Progress comes from `callback_on_step_end`; cancelling raises inside that callback, so
the pipeline stops within one step and skips the VAE decode it would still run after an `interrupt`.
The request's `sampler` picks the scheduler (backends.samplers): the one the folder ships when it names
that one, else the family's scheduler of that name; names the model's schedule has no scheduler for are
refused before anything loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reelgen.backends.base import GenerationCancelled, GenerationRequest, GenerationResult, ModelSpec
from reelgen.backends.images import decode_image, fit_image
from reelgen.backends.memory import apply_options, check_runtime
from reelgen.backends.model_table import parse_size
from reelgen.backends.registry import DiffusersConfig, parse_entry
from reelgen.backends.samplers import SchedulerSet

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ENCODERS = ("text_encoder", "text_encoder_2", "image_encoder")  # pipeline components timed as "encode"


class ModelLoadError(RuntimeError):
    """A model folder that exists but does not load (broken weights, wrong versions, missing packages)."""


class DiffusersGenerator:
    """A diffusers video pipeline behind the Generator protocol. Loads once, lazily; one batch at a time."""

    def __init__(self, config: DiffusersConfig):
        check_runtime(config.memory, device=config.device, dtype=config.dtype)
        self.config = config
        self.family = config.model_family
        self.spec: ModelSpec = config.spec
        self.pipeline = None  # the loaded diffusers pipeline, after load()
        self.schedulers: SchedulerSet | None = None  # its schedulers by sampler name, after load()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, model_id: str | None = None, **entry) -> "DiffusersGenerator":
        """Without a registry file: the same fields as a models.toml entry (family, dtype, memory={...}, ...)."""
        model_id = model_id or Path(path).name
        return cls(parse_entry({"id": model_id, "backend": "diffusers", "path": str(path), **entry}))

    def load(self) -> float:
        with self._lock:
            if self.pipeline is not None:
                return 0.0
            start = time.perf_counter()
            import diffusers
            import transformers

            # their loading bars would break the service's one-JSON-object-per-line logs and the CLI's progress
            diffusers.utils.logging.disable_progress_bar()
            transformers.utils.logging.disable_progress_bar()
            cls = getattr(diffusers, self.family.pipeline)
            try:
                pipe = cls.from_pretrained(self.config.path, dtype=_DTYPES[self.config.dtype],
                                           local_files_only=not self.config.hub)
            except Exception as e:  # diffusers raises OSError, ValueError, KeyError, ... for a broken folder
                raise ModelLoadError(f"could not load model {self.spec.id!r} ({self.family.pipeline}) from "
                                     f"{self.config.path}: {type(e).__name__}: {e}") from e
            pipe.set_progress_bar_config(disable=True)
            apply_options(pipe, self.config.memory, self.family, self.config.device)
            self.schedulers = SchedulerSet(pipe.scheduler, self.family)
            self.pipeline = pipe
            return time.perf_counter() - start

    def generate(self, requests: list[GenerationRequest], *, on_step: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> GenerationResult:
        # 0. validate everything before any work (the model may not even be loaded yet)
        size, images = self.check(requests)
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled before generation started")
        self.load()
        first = requests[0]
        pipe = self.pipeline
        pipe.scheduler = self.schedulers.get(first.sampler)
        # 1. arguments: the request's, the family's conventions, then the registry's call_options
        width, height = size
        offloaded = self.config.memory.cpu_offload or self.config.memory.sequential_offload
        generator_device = "cpu" if offloaded else self.config.device
        shared = {"height": height, "width": width, "num_frames": first.frames, "num_inference_steps": first.steps,
                  self.family.guidance_argument: first.guidance_scale, "output_type": "np",
                  **self.config.call_options}
        if self.family.fps_argument:
            shared[self.family.fps_argument] = self.spec.fps
        # Text-only batches run as one call. Image pipelines take one image per call (WanImageToVideoPipeline
        # accepts no list), so each image-to-video request runs alone.
        calls = [list(range(len(requests)))] if images is None else [[i] for i in range(len(requests))]

        # 2. denoise and decode, with progress and cancellation after every step
        total = first.steps * len(calls)
        done = 0
        clock = {"start": time.perf_counter(), "last_step": None}

        def step_end(p, i: int, t, callback_kwargs: dict) -> dict:
            nonlocal done
            done += 1
            clock["last_step"] = time.perf_counter()
            if on_step is not None:
                on_step(done, total)
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"cancelled after step {done} of {total}")
            return callback_kwargs

        outputs, decode = [], 0.0
        with _EncoderTimer(pipe) as encode:
            for batch in calls:
                kwargs = dict(shared)
                # one generator per video: a video depends only on its own seed, even inside a batch
                kwargs["generator"] = [torch.Generator(generator_device).manual_seed(requests[i].seed) for i in batch]
                if self.family.takes_prompt:
                    kwargs["prompt"] = [requests[i].prompt for i in batch]
                    kwargs["negative_prompt"] = [requests[i].negative_prompt for i in batch]
                if images is not None:
                    kwargs["image"] = images[batch[0]]
                outputs.append(pipe(**kwargs, callback_on_step_end=step_end).frames)  # (b, F, H, W, 3) in [0, 1]
                decode += time.perf_counter() - (clock["last_step"] or clock["start"])
        end = time.perf_counter()
        timings = {"encode": encode.seconds, "denoise": end - clock["start"] - encode.seconds - decode,
                   "decode": decode}  # denoise includes preparing latents

        # 3. uint8 frames, checked against what was asked (in place: a long video's float frames are large)
        frames = np.asarray(outputs[0]) if len(outputs) == 1 else np.concatenate([np.asarray(o) for o in outputs])
        np.clip(frames, 0.0, 1.0, out=frames)
        frames *= 255.0
        frames += 0.5
        frames = frames.astype(np.uint8)
        expected = (len(requests), first.frames, height, width, 3)
        if frames.shape != expected:
            raise RuntimeError(f"{self.family.pipeline} returned frames of shape {frames.shape}, expected {expected}")
        timings["postprocess"] = time.perf_counter() - end
        return GenerationResult(frames=frames, timings=timings)

    def check(self, requests: list[GenerationRequest]) -> tuple[tuple[int, int], list | None]:
        """Raise ValueError on anything this model cannot do; -> (width, height) and the input images."""
        if not requests:
            raise ValueError("no requests to generate")
        spec = self.spec
        for r in requests:
            r.check(spec.max_frames)
            spec.check_frames(r.frames)
            spec.check_sampler(r.sampler)
            if r.steps > self.config.max_steps:
                raise ValueError(f"model {spec.id} allows at most {self.config.max_steps} steps, got {r.steps}")
            if r.image is not None and not spec.image_to_video:
                raise ValueError(f"model {spec.id} generates from text only; an input image needs an "
                                 "image-to-video model")
            if r.image is None and spec.requires_image:
                raise ValueError(f"model {spec.id} is image-to-video only: every request needs an input image")
            if r.size is not None and f"{r.size[0]}x{r.size[1]}" not in spec.sizes:
                raise ValueError(f"model {spec.id} generates sizes {', '.join(spec.sizes)}, got "
                                 f"{r.size[0]}x{r.size[1]}")
        first = requests[0]
        shared = ("frames", "steps", "guidance_scale", "sampler", "size")
        if any(getattr(r, k) != getattr(first, k) for r in requests for k in shared):
            raise ValueError(f"a batch must share {', '.join(shared)}")
        if any((r.image is None) != (first.image is None) for r in requests):
            raise ValueError("a batch must be all image-to-video or all text-to-video")
        size = first.size or parse_size(spec.default_size)
        images = None if first.image is None else [fit_image(decode_image(r.image), size) for r in requests]
        return size, images


class _EncoderTimer:
    """Seconds spent in the pipeline's text and image encoders, via forward hooks."""

    def __init__(self, pipe):
        self.modules = [m for m in (getattr(pipe, name, None) for name in _ENCODERS) if isinstance(m, torch.nn.Module)]
        self.seconds = 0.0
        self._handles = []
        self._started = 0.0

    def __enter__(self) -> "_EncoderTimer":
        for m in self.modules:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def _pre(self, module, args) -> None:
        self._started = time.perf_counter()

    def _post(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._started
