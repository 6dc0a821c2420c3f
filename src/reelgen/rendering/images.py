"""Still previews of a clip with Pillow: a thumbnail of its middle frame and a spritesheet of every frame."""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from einops import rearrange
from PIL import Image

from reelgen.rendering.video import upscale

_SAVE_OPTIONS = {
    # 4:4:4 chroma keeps the colour edges of upscaled pixel art as sharp as the luma.
    "jpeg": {"quality": 90, "subsampling": 0},
    "png": {},
}


def thumbnail(frames: np.ndarray, min_side: int = 256, fmt: str = "jpeg") -> bytes:
    """The middle frame of (F, H, W, 3) frames, upscaled, as a JPEG or PNG."""
    middle = len(frames) // 2
    return _encode_image(upscale(frames[middle : middle + 1], min_side)[0], fmt)


def spritesheet(frames: np.ndarray, columns: int | None = None, min_side: int = 128, fmt: str = "jpeg") -> bytes:
    """Every frame, upscaled, in a grid read left to right then top to bottom; unused cells are black."""
    cells = upscale(frames, min_side)  # (F, h, w, 3)
    if columns is None:
        columns = math.ceil(math.sqrt(len(cells)))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    rows = math.ceil(len(cells) / columns)
    blank = np.zeros((rows * columns - len(cells), *cells.shape[1:]), np.uint8)
    grid = rearrange(np.concatenate([cells, blank]), "(r c) h w ch -> (r h) (c w) ch", c=columns)
    return _encode_image(grid, fmt)


def _encode_image(pixels: np.ndarray, fmt: str) -> bytes:
    """uint8 (H, W, 3) -> image file bytes."""
    if fmt not in _SAVE_OPTIONS:
        raise ValueError(f"unsupported image format {fmt!r}: use one of {', '.join(_SAVE_OPTIONS)}")
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper(), **_SAVE_OPTIONS[fmt])
    return buffer.getvalue()
