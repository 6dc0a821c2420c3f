import numpy as np
import pytest


@pytest.fixture
def frames() -> np.ndarray:
    """16 frames of 32x32: a red 8x8 square moving right over a flat blue background."""
    clip = np.empty((16, 32, 32, 3), np.uint8)
    clip[:] = (20, 60, 120)
    for i in range(16):
        clip[i, 12:20, i : i + 8] = (230, 40, 40)
    return clip
