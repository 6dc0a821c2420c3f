"""The procedural world the built-in model learns: one or two shapes moving on a plain background.

Every clip is a pure function of (seed, index), so a data set is reproducible
bit for bit on any machine and needs no storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Palette: saturated enough to be told apart after a few denoising steps.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 200, 40),
    "blue": (30, 70, 255),
    "yellow": (250, 230, 20),
    "cyan": (20, 230, 230),
    "magenta": (230, 30, 230),
    "orange": (255, 140, 0),
    "white": (255, 255, 255),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "navy": (0, 0, 100),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 3.5, "large": 6.0}  # radius in pixels at 32x32, scaled with resolution
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
SPEEDS = {"slowly": 0.6, "quickly": 1.2}  # pixels per frame at 32x32

# Attribute combinations never shown in training, to measure generalization.
HELD_OUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset(
    {("orange", "triangle"), ("cyan", "circle"), ("magenta", "square")}
)

SUPERSAMPLE = 4  # anti-aliasing factor: edges are area-averaged, not jagged


@dataclass(frozen=True)
class ShapeSpec:
    """One object: what it looks like and how it moves."""

    color: str
    shape: str
    size: str
    direction: str
    speed: str  # "slowly" or "quickly"; ignored when direction is "still"


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip's pixels."""

    objects: tuple[ShapeSpec, ...]
    background: str
    starts: tuple[tuple[float, float], ...]  # (x, y) centre at frame 0, per object, in pixels


def is_held_out(obj: ShapeSpec) -> bool:
    return (obj.color, obj.shape) in HELD_OUT_COMBINATIONS


def _contrasts(color: str, background: str) -> bool:
    c, b = np.array(COLORS[color], float), np.array(BACKGROUNDS[background], float)
    return np.abs(c - b).sum() > 150


def velocity(obj: ShapeSpec, resolution: int) -> tuple[float, float]:
    dx, dy = DIRECTIONS[obj.direction]
    v = SPEEDS[obj.speed] * resolution / 32
    return dx * v, dy * v


def sample_spec(
    rng: np.random.Generator,
    *,
    frames: int = 16,
    resolution: int = 32,
    two_objects_prob: float = 0.25,
    held_out: str = "exclude",
) -> ClipSpec:
    """Draw a random clip. `held_out` is "exclude" (training), "only" (evaluation) or "any"."""
    background = str(rng.choice(list(BACKGROUNDS)))
    count = 2 if rng.random() < two_objects_prob else 1
    objects: list[ShapeSpec] = []
    while len(objects) < count:
        obj = ShapeSpec(
            color=str(rng.choice(list(COLORS))),
            shape=str(rng.choice(SHAPES)),
            size=str(rng.choice(list(SIZES))),
            direction=str(rng.choice(list(DIRECTIONS))),
            speed=str(rng.choice(list(SPEEDS))),
        )
        if not _contrasts(obj.color, background):
            continue
        if held_out == "exclude" and is_held_out(obj):
            continue
        if held_out == "only" and not is_held_out(obj) and not objects:
            continue
        if any(o.color == obj.color for o in objects):
            continue  # two objects of one colour would make captions ambiguous
        objects.append(obj)
    starts = tuple(_start_position(rng, o, frames, resolution) for o in objects)
    return ClipSpec(objects=tuple(objects), background=background, starts=starts)


def _start_position(rng: np.random.Generator, obj: ShapeSpec, frames: int, resolution: int) -> tuple[float, float]:
    """A start from which the whole trajectory stays inside the frame."""
    r = SIZES[obj.size] * resolution / 32
    vx, vy = velocity(obj, resolution)
    travel_x, travel_y = vx * (frames - 1), vy * (frames - 1)
    lo, hi = r + 0.5, resolution - r - 0.5

    def axis(travel: float) -> float:
        a, b = (lo, hi - travel) if travel >= 0 else (lo - travel, hi)
        return float(rng.uniform(a, b)) if b > a else (lo + hi) / 2

    return axis(travel_x), axis(travel_y)


def _mask(shape: str, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Coverage of one shape on a supersampled grid of pixel centres."""
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "square":
        h = r * 0.886  # same area as the circle of radius r
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    if shape == "triangle":
        # Upward equilateral triangle inscribed in a circle of radius 1.2 r.
        R = 1.2 * r
        top, base = cy - R, cy + R / 2
        half = (ys - top) / (base - top) * (R * np.sqrt(3) / 2)
        return (ys >= top) & (ys <= base) & (np.abs(xs - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def render(spec: ClipSpec, *, frames: int = 16, resolution: int = 32) -> np.ndarray:
    """Rasterize a clip to uint8 frames of shape (F, H, W, 3)."""
    s = SUPERSAMPLE
    grid = (np.arange(resolution * s) + 0.5) / s
    xs, ys = np.meshgrid(grid, grid)  # (H*s, W*s), pixel units
    bg = np.array(BACKGROUNDS[spec.background], np.float32)
    out = np.empty((frames, resolution, resolution, 3), np.uint8)
    for f in range(frames):
        canvas = np.broadcast_to(bg, (resolution * s, resolution * s, 3)).copy()
        for obj, (x0, y0) in zip(spec.objects, spec.starts):
            vx, vy = velocity(obj, resolution)
            m = _mask(obj.shape, x0 + vx * f, y0 + vy * f, SIZES[obj.size] * resolution / 32, xs, ys)
            canvas[m] = COLORS[obj.color]
        # Box-filter down: area-averaged anti-aliasing.
        small = canvas.reshape(resolution, s, resolution, s, 3).mean(axis=(1, 3))
        out[f] = np.clip(np.round(small), 0, 255).astype(np.uint8)
    return out
