"""The built-in model as a Generator: the small transformer trained here on moving shapes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from reelgen.backends.base import BatchResult, GenerationRequest, GenerationResult, ModelSpec
from reelgen.models.transformer import VideoTransformerConfig, load_config
from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR, TextToVideoPipeline

BUILTIN_MODEL_ID = "reelgen-shapes"
NATIVE_FPS = 8


def builtin_spec(cfg: VideoTransformerConfig, model_id: str = BUILTIN_MODEL_ID) -> ModelSpec:
    side = cfg.resolution
    return ModelSpec(
        id=model_id,
        description="reelgen's built-in text-to-video model, trained on a procedural world of moving shapes",
        native_size=(side, side),
        fps=NATIVE_FPS,
        max_frames=cfg.frames,
        frames_step=cfg.patch_frames,  # a tubelet holds patch_frames frames
        sizes=("256x256", "512x512"),
        default_size="256x256",
        default_seconds=str(cfg.frames // NATIVE_FPS),
    )


class BuiltinGenerator:
    """Loads the pipeline lazily, once; thread-safe loading, one batch at a time per instance."""

    def __init__(self, model_dir: str | Path | None = None, model_id: str = BUILTIN_MODEL_ID):
        self.model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
        self.spec = builtin_spec(load_config(self.model_dir), model_id)
        self._pipeline: TextToVideoPipeline | None = None
        self._lock = threading.Lock()

    def load(self) -> float:
        with self._lock:
            if self._pipeline is not None:
                return 0.0
            start = time.perf_counter()
            self._pipeline = TextToVideoPipeline.from_pretrained(self.model_dir)
            return time.perf_counter() - start

    def generate(self, requests: list[GenerationRequest], *, on_step: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> GenerationResult:
        self.load()
        timings: dict[str, float] = {}
        frames = self._pipeline(requests, on_step=on_step, cancel=cancel, timings=timings)
        return GenerationResult(frames=frames, timings=timings)

    def generate_each(self, requests: list[GenerationRequest], *,
                      on_steps: list[Callable[[int, int], None] | None],
                      cancels: list[threading.Event | None]) -> BatchResult:
        self.load()
        timings: dict[str, float] = {}
        videos = self._pipeline.generate_each(requests, on_steps=on_steps, cancels=cancels, timings=timings)
        return BatchResult(videos=videos, timings=timings)
