"""A deterministic, index-addressed data set of captioned clips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelgen.data.captions import caption
from reelgen.data.world import ClipSpec, render, sample_spec


@dataclass(frozen=True)
class Sample:
    frames: np.ndarray  # (F, H, W, 3) uint8
    caption: str
    spec: ClipSpec


class ShapesWorld:
    """Clip `i` is a pure function of (seed, split, i): no files, same bytes everywhere.

    split "train" excludes held-out combinations and uses training phrasings;
    "eval" uses held-out phrasings over all non-held-out combinations;
    "heldout" uses held-out phrasings over held-out combinations only.
    """

    SPLITS = {"train": 0, "eval": 1, "heldout": 2}

    def __init__(self, split: str = "train", *, seed: int = 0, frames: int = 16, resolution: int = 32,
                 two_objects_prob: float | None = None):
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {sorted(self.SPLITS)}, got {split!r}")
        self.split, self.seed, self.frames, self.resolution = split, seed, frames, resolution
        # Evaluation uses single objects so the oracle can read every attribute unambiguously.
        self.two_objects_prob = (0.25 if split == "train" else 0.0) if two_objects_prob is None else two_objects_prob

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, self.SPLITS[self.split], index])
        held_out = {"train": "exclude", "eval": "exclude", "heldout": "only"}[self.split]
        spec = sample_spec(rng, frames=self.frames, resolution=self.resolution,
                           two_objects_prob=self.two_objects_prob, held_out=held_out)
        text = caption(spec, rng, evaluation=self.split != "train")
        return Sample(render(spec, frames=self.frames, resolution=self.resolution), text, spec)

    def batch(self, indices) -> tuple[np.ndarray, list[str]]:
        """Frames (B, F, H, W, 3) uint8 and their captions."""
        samples = [self[int(i)] for i in indices]
        return np.stack([s.frames for s in samples]), [s.caption for s in samples]
