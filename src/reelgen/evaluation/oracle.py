"""A prompt-adherence oracle: reads background, colour, shape and motion off a single-object clip.

It sees only the frames, never the prompt or anything the model was given, so
a model can score only by drawing what was asked. Every threshold is relative
to the procedural world (reelgen.data.world): its palette, its anti-aliased
shapes and its speeds, measured in pixels of a 32 x 32 frame at any resolution.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

import cv2
import numpy as np

from reelgen.data.world import BACKGROUNDS, COLORS, ClipSpec

ATTRIBUTES = ("background", "color", "shape", "direction")

# A border pixel counts as a palette background within this RGB distance; the
# closest two backgrounds (black, navy) are 100 apart, so votes never overlap.
BACKGROUND_TOLERANCE = 48.0
# Every object colour differs from its background by >= 157 in RGB (green on
# gray): pixels beyond this distance are "object", with room for model noise.
OBJECT_THRESHOLD = 60.0
# Below this fraction of the frame, a blob is speckle, not an object: the
# smallest object (a small triangle) covers 2.2 % of a frame.
MIN_OBJECT_FRACTION = 0.008
# Fill ratio of the bounding box: ideally triangle 0.5, circle pi/4 = 0.785,
# square 1. Measured at 32 px, small triangles reach 0.67 (their apex pixel is
# too faint to count), circles span 0.75-0.81 and squares 0.96-0.99.
TRIANGLE_BELOW, SQUARE_ABOVE = 0.71, 0.88
# Slowest motion in the world is 0.6 px per frame at 32 px; half of it is "still".
STILL_BELOW = 0.3
UPSCALE = 8  # shapes are measured on an 8x bilinear upscale of their coverage


@dataclass(frozen=True)
class Reading:
    """What a clip shows; None where the oracle cannot tell (no background, no object)."""

    background: str | None
    color: str | None
    shape: str | None
    direction: str | None

    @classmethod
    def from_spec(cls, spec: ClipSpec) -> "Reading":
        """The reading a perfect oracle would give for a single-object clip."""
        if len(spec.objects) != 1:
            raise ValueError(f"the oracle reads single-object clips; this spec has {len(spec.objects)} objects")
        obj = spec.objects[0]
        return cls(spec.background, obj.color, obj.shape, obj.direction)

    def agreement(self, truth: "Reading") -> dict[str, bool]:
        """Per attribute: does this reading match `truth`? An unread attribute never matches."""
        return {f.name: getattr(self, f.name) is not None and getattr(self, f.name) == getattr(truth, f.name)
                for f in fields(self)}


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) colours -> index of the nearest palette entry and the distance to it."""
    ref = np.array(list(palette.values()), np.float32)  # (K, 3)
    d = np.linalg.norm(rgb[..., None, :] - ref, axis=-1)  # (..., K)
    return d.argmin(-1), d.min(-1)


def _background(frames: np.ndarray) -> tuple[str | None, np.ndarray | None]:
    """The palette background most of the frame borders show, and its observed colour."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, 1:-1, 0], frames[:, 1:-1, -1]], axis=1)
    border = border.reshape(-1, 3)  # (P, 3)
    index, dist = _nearest(border, BACKGROUNDS)
    votes = np.bincount(index[dist <= BACKGROUND_TOLERANCE], minlength=len(BACKGROUNDS))
    if votes.max() * 2 <= len(border):  # no plain background: noise, or no background at all
        return None, None
    winner = int(votes.argmax())
    observed = np.median(border[(index == winner) & (dist <= BACKGROUND_TOLERANCE)], axis=0)
    return list(BACKGROUNDS)[winner], observed


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component of a boolean (H, W) mask."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return np.zeros_like(mask)
    return labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())


def _fill_ratio(alpha: np.ndarray) -> float:
    """Area of a shape over the area of its bounding box, from its anti-aliased coverage (H, W); NaN if faint."""
    big = cv2.resize(alpha, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR) >= 0.5
    ys, xs = np.nonzero(big)
    if len(xs) == 0:
        return float("nan")
    return len(xs) / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))


def shape_from_fill(fill: float) -> str:
    return "triangle" if fill < TRIANGLE_BELOW else "square" if fill > SQUARE_ABOVE else "circle"


def direction_from_velocity(vx: float, vy: float) -> str:
    """Velocity in pixels per frame at 32 px -> one of world.DIRECTIONS (image y points down)."""
    if np.hypot(vx, vy) < STILL_BELOW:
        return "still"
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def read_clip(frames: np.ndarray) -> Reading:
    """Read a single-object clip, uint8 (F, H, W, 3), into a Reading."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"expected frames of shape (F >= 2, H, W, 3), got {frames.shape}")
    x = frames.astype(np.float32)
    f, h, w, _ = x.shape
    background, bg = _background(x)
    if background is None:
        return Reading(None, None, None, None)

    # 1. the object: the largest blob clearly unlike the background, per frame
    dist = np.linalg.norm(x - bg, axis=-1)  # (F, H, W)
    blobs = np.stack([_largest_blob(d > OBJECT_THRESHOLD) for d in dist])  # (F, H, W)
    present = blobs.sum(axis=(1, 2)) >= MIN_OBJECT_FRACTION * h * w  # (F,)
    if present.sum() * 2 < f:  # an object must be there most of the clip
        return Reading(background, None, None, None)

    # 2. colour: the median of the blob's purest pixels; anti-aliased edges are mixed with the background
    d_obj = dist[blobs & present[:, None, None]]
    core = d_obj >= 0.8 * np.percentile(d_obj, 90)
    observed = np.median(x[blobs & present[:, None, None]][core], axis=0)
    index, _ = _nearest(observed, COLORS)  # in RGB, the space the model denoises in by default
    color = list(COLORS)[int(index)]

    # 3. coverage: 0 on the background, 1 on the object colour, fractional on edges
    contrast = max(float(np.linalg.norm(observed - bg)), OBJECT_THRESHOLD)
    near = np.stack([cv2.dilate(b.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for b in blobs])
    alpha = np.where(near, np.clip(dist / contrast, 0, 1), 0).astype(np.float32)  # (F, H, W)

    # 4. shape: the majority over frames of the bounding-box fill ratio (ties go to the earliest frame's)
    fills = [_fill_ratio(a) for a, p in zip(alpha, present) if p]
    shapes = Counter(shape_from_fill(v) for v in fills if np.isfinite(v))
    shape = shapes.most_common(1)[0][0] if shapes else None

    # 5. motion: a straight-line fit to the coverage-weighted centroid track
    t = np.nonzero(present)[0]
    mass = alpha[t].sum(axis=(1, 2))  # (T,)
    cx = (alpha[t] * np.arange(w)).sum(axis=(1, 2)) / mass
    cy = (alpha[t] * np.arange(h)[:, None]).sum(axis=(1, 2)) / mass
    scale = w / 32  # velocities are compared in pixels of a 32-pixel frame
    vx, vy = np.polyfit(t, cx, 1)[0] / scale, np.polyfit(t, cy, 1)[0] / scale
    return Reading(background, color, shape, direction_from_velocity(vx, vy))
