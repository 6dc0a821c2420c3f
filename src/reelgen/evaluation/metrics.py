"""Temporal quality of a clip: flicker, flow-warping error and motion magnitude.

Every metric takes uint8 frames (F, H, W, 3) and returns a float; `clip_metrics`
returns all three and estimates optical flow once. Flow is OpenCV's Farneback
(Farneback, "Two-Frame Motion Estimation Based on Polynomial Expansion", 2003).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Our frames are 16-32 px, too few for Farneback's polynomial windows, so flow
# runs on a cubic upscale towards 128 px, by at most 4x: larger factors smooth
# the edges so much that flow reads motion up to 3x too slow.
FLOW_SIZE, MAX_UPSCALE = 128, 4
# Farneback's settings but the window, which spans a quarter of the frame, as
# large as an object: then a flat interior moves with its edges, where the
# usual 15 px window reads a large square 30 % slow.
FARNEBACK = dict(pyr_scale=0.5, levels=3, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
# A pixel is "moving" where its grey level changes by more than this between frames (0-255).
CHANGED_ABOVE = 8.0


def _check(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames of shape (F >= 2, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, 0-255 scale: 0 for a still clip.

    VBench's "temporal flickering" score is 1 - flicker / 255 (higher is
    better); we keep the raw difference, which does not crowd every clip near 1.
    It counts honest motion too, so read it next to `motion_magnitude`.
    """
    x = _check(frames).astype(np.float32)
    return float(np.abs(np.diff(x, axis=0)).mean())


@dataclass
class _Flow:
    frames: np.ndarray  # (F, S, S, 3) uint8, upscaled
    grey: np.ndarray  # (F, S, S) float32
    flows: list[np.ndarray]  # F-1 x (S, S, 2): (dx, dy) from frame t to t+1, upscaled pixels
    upscale: int  # upscaled pixels per clip pixel


def _flow(frames: np.ndarray) -> _Flow:
    frames = _check(frames)
    k = min(max(FLOW_SIZE // frames.shape[2], 1), MAX_UPSCALE)
    big = np.stack([cv2.resize(f, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC) for f in frames])  # (F, S, S, 3)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in big])  # (F, S, S) uint8
    window = big.shape[2] // 4 | 1  # odd
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, winsize=window, **FARNEBACK)
             for a, b in zip(grey[:-1], grey[1:])]
    return _Flow(big, grey.astype(np.float32), flows, k)


def _warping_error(fl: _Flow) -> float:
    grid_y, grid_x = np.mgrid[0:fl.grey.shape[1], 0:fl.grey.shape[2]].astype(np.float32)  # (S, S) each
    errors = []
    for prev, nxt, flow in zip(fl.frames[:-1], fl.frames[1:], fl.flows):
        # The flow carries prev's pixel (x, y) to (x + dx, y + dy) in nxt: sample nxt there.
        warped = cv2.remap(nxt, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        errors.append(np.abs(warped.astype(np.float32) - prev.astype(np.float32)).mean())
    return float(np.mean(errors))


def _motion(fl: _Flow) -> float:
    speeds = []
    for a, b, flow in zip(fl.grey[:-1], fl.grey[1:], fl.flows):
        moving = np.abs(b - a) > CHANGED_ABOVE  # (S, S)
        speeds.append(np.linalg.norm(flow[moving], axis=-1).mean() / fl.upscale if moving.any() else 0.0)
    return float(np.mean(speeds))


def warping_error(frames: np.ndarray) -> float:
    """Mean absolute error (0-255) between each frame and the next one warped back onto it by optical flow.

    Motion the flow explains costs nothing; what is left is flicker, objects
    changing shape or colour, and things appearing from nowhere. Measured on
    the upscale the flow runs on.
    """
    return _warping_error(_flow(frames))


def motion_magnitude(frames: np.ndarray) -> float:
    """Mean optical-flow speed where the image changes, in pixels per frame at the clip's own resolution.

    Averaging only over changing pixels keeps a small object from being
    diluted by the still background: a square moving 1.2 px per frame scores
    about 1.2 whatever its size, and a still clip scores 0.
    """
    return _motion(_flow(frames))


def clip_metrics(frames: np.ndarray) -> dict[str, float]:
    """All three metrics of one clip, sharing one flow estimate."""
    fl = _flow(frames)
    return {"flicker": flicker(frames), "warping_error": _warping_error(fl), "motion": _motion(fl)}
