from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from reelgen.rendering import spritesheet, thumbnail, upscale



def decode(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def test_thumbnail_is_the_middle_frame_upscaled(frames):
    image = decode(thumbnail(frames, fmt="png"))
    assert image.format == "PNG" and image.size == (256, 256)
    assert np.array_equal(np.asarray(image), upscale(frames)[8])


def test_thumbnail_jpeg(frames):
    image = decode(thumbnail(frames, min_side=100))
    assert image.format == "JPEG" and image.size == (128, 128)
    # Frame 8's square spans columns 8..15 and rows 12..19: at 4x, its centre is (64, 48).
    assert np.abs(np.asarray(image)[60:68, 40:56].astype(int) - frames[8, 15, 11]).mean() < 10


@pytest.mark.parametrize(("columns", "size"), [(None, (512, 512)), (5, (640, 512)), (16, (2048, 128))])
def test_spritesheet_grid(frames, columns, size):
    image = decode(spritesheet(frames, columns=columns, fmt="png"))
    assert image.size == size
    grid, cells = np.asarray(image), upscale(frames, 128)
    cols = size[0] // 128
    for i in range(cols * (size[1] // 128)):
        row, col = divmod(i, cols)
        expected = cells[i] if i < len(cells) else 0
        cell = grid[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
        assert np.array_equal(cell, np.broadcast_to(expected, (128, 128, 3)))


def test_spritesheet_jpeg_size(frames):
    image = decode(spritesheet(frames[:3], min_side=64))
    assert image.format == "JPEG" and image.size == (128, 128)


def test_bad_arguments_raise(frames):
    with pytest.raises(ValueError, match="columns"):
        spritesheet(frames, columns=0)
    with pytest.raises(ValueError, match="jpeg, png"):
        thumbnail(frames, fmt="bmp")
    with pytest.raises(ValueError, match="frames"):
        thumbnail(frames.astype(np.float32))
