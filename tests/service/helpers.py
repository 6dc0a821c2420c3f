"""Test doubles and polling for the service tests: conditions with deadlines, never sleep-and-hope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from reelgen.backends.base import GenerationCancelled, GenerationRequest, GenerationResult, ModelSpec
from reelgen.service.jobs import Job


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.02,
               message: str = "condition") -> object:
    """Poll until `condition()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


FAKE_SPEC = ModelSpec(id="fake", description="steps on command", native_size=(16, 16), fps=8, max_frames=8,
                      sizes=("256x256", "512x512"), default_size="256x256", default_seconds="1", default_steps=4)


class FakeGenerator:
    """A Generator without a model: each step waits `step_seconds`; frames are a colour from the seed."""

    def __init__(self, step_seconds: float = 0.0, load_seconds: float = 0.0, fail: Exception | None = None,
                 spec: ModelSpec = FAKE_SPEC):
        self.step_seconds, self.load_seconds, self.fail, self.spec = step_seconds, load_seconds, fail, spec
        self.steps_run = 0
        self.cancelled = threading.Event()
        self.requests: list[GenerationRequest] = []  # every request generated, to check what reached the model

    def load(self) -> float:
        time.sleep(self.load_seconds)
        return self.load_seconds

    def generate(self, requests: list[GenerationRequest], *, on_step=None, cancel=None) -> GenerationResult:
        request = requests[0]
        self.requests.append(request)
        cancel = cancel or threading.Event()
        for i in range(request.steps):
            if cancel.wait(self.step_seconds):  # one step's work, cut short by a cancel like a real step ends
                self.cancelled.set()
                raise GenerationCancelled(f"cancelled in step {i + 1}")
            self.steps_run += 1
            if on_step is not None:
                on_step(i + 1, request.steps)
        if self.fail is not None:
            raise self.fail
        frames = np.full((1, request.frames, 16, 16, 3), request.seed % 256, np.uint8)
        return GenerationResult(frames=frames, timings={"encode_text": 0.0, "denoise": 0.0, "decode": 0.0})


def new_job(**overrides) -> Job:
    fields = dict(model="fake", prompt="a red circle", seed=7, size="256x256", seconds="1", frames=8, steps=4,
                  guidance_scale=5.0, sampler="ddim", fps=8, format="mp4")
    return Job(**(fields | overrides))


def save_slow_model(path, *, dim: int, depth: int):
    """A randomly initialized test-preset model with 2x2 patches, slow enough per step for a live server's job
    to be acted on mid-run (width and depth set the pace) -> its folder."""
    from dataclasses import replace

    from reelgen.models.transformer import PRESETS, VideoTransformer

    VideoTransformer(replace(PRESETS["test"], dim=dim, depth=depth, patch_size=2)).save_pretrained(path)
    return path
