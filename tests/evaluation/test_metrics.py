import numpy as np
import pytest

from reelgen.data.world import ClipSpec, ShapeSpec, render
from reelgen.evaluation.metrics import clip_metrics, flicker, motion_magnitude, warping_error


def clip(shape="square", size="large", direction="right", speed="quickly", resolution=32) -> np.ndarray:
    start = (8.0 * resolution / 32, 8.0 * resolution / 32)  # the whole path right or down stays in frame
    return render(ClipSpec((ShapeSpec("blue", shape, size, direction, speed),), "gray", (start,)),
                  resolution=resolution)


def test_still_clip_scores_zero():
    m = clip_metrics(clip(direction="still"))
    assert m["flicker"] == 0
    assert m["warping_error"] == pytest.approx(0, abs=1e-3)
    assert m["motion"] == 0


@pytest.mark.parametrize("shape", ["square", "circle", "triangle"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("speed, px_per_frame", [("slowly", 0.6), ("quickly", 1.2)])
def test_motion_magnitude_is_the_objects_speed(shape, size, speed, px_per_frame):
    assert motion_magnitude(clip(shape, size, "down", speed)) == pytest.approx(px_per_frame, rel=0.15)


@pytest.mark.parametrize("resolution", [16, 64])
def test_motion_magnitude_is_in_the_clips_own_pixels(resolution):
    # The world scales speeds with resolution: "quickly" is 1.2 px per frame at 32 px.
    assert motion_magnitude(clip(resolution=resolution)) == pytest.approx(1.2 * resolution / 32, rel=0.15)


def test_flow_explains_motion_but_not_noise():
    moving = clip()
    noise = np.random.default_rng(0).integers(0, 256, moving.shape, dtype=np.uint8)
    assert flicker(noise) > 20 * flicker(moving)
    assert warping_error(moving) < 0.5 * flicker(moving)  # motion that flow can undo is not an error
    assert warping_error(noise) > 30


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        flicker(np.zeros((4, 8, 8, 3), np.float32))
