"""The oracle must read true clips almost perfectly and read noise no better than chance."""

from collections import Counter

import numpy as np
import pytest

from reelgen.data.dataset import ShapesWorld
from reelgen.data.world import BACKGROUNDS, ClipSpec, ShapeSpec, render
from reelgen.evaluation.oracle import ATTRIBUTES, Reading, read_clip

PER_SPLIT = 150  # 300 clips: a 1 % error rate is 3 clips; rendering them takes about 2 s


@pytest.fixture(scope="module")
def world_clips():
    return [ShapesWorld(split)[i] for split in ("eval", "heldout") for i in range(PER_SPLIT)]


def accuracy(readings, truths) -> dict[str, float]:
    hits = Counter()
    for r, t in zip(readings, truths):
        hits.update(k for k, ok in r.agreement(t).items() if ok)
    return {k: hits[k] / len(truths) for k in ATTRIBUTES}


def chance(truths) -> dict[str, float]:
    """Best accuracy of any reading independent of the truth: the frequency of the commonest class."""
    return {k: max(Counter(getattr(t, k) for t in truths).values()) / len(truths) for k in ATTRIBUTES}


def test_reads_true_clips(world_clips):
    truths = [Reading.from_spec(s.spec) for s in world_clips]
    acc = accuracy([read_clip(s.frames) for s in world_clips], truths)
    assert all(a >= 0.99 for a in acc.values()), acc


def test_reads_true_clips_through_mild_noise(world_clips):
    # A trained model's clips are close to the data but not exact.
    rng = np.random.default_rng(0)
    clips = world_clips[::5]
    noisy = [np.clip(s.frames + rng.normal(0, 10, s.frames.shape), 0, 255).astype(np.uint8) for s in clips]
    acc = accuracy([read_clip(f) for f in noisy], [Reading.from_spec(s.spec) for s in clips])
    assert all(a >= 0.95 for a in acc.values()), acc


def test_uniform_noise_reads_as_nothing(world_clips):
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert read_clip(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)) == Reading(None, None, None, None)


def test_blobs_on_a_background_score_chance(world_clips):
    """Random coloured blocks on a palette background: the oracle reads something, and it is chance."""
    rng = np.random.default_rng(2)
    truths = [Reading.from_spec(s.spec) for s in world_clips]
    readings = []
    for _ in truths:
        bg = np.array(list(BACKGROUNDS.values())[rng.integers(len(BACKGROUNDS))], np.uint8)
        blocks = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
        blocks[rng.random((16, 8, 8)) > 0.15] = bg
        readings.append(read_clip(blocks.repeat(4, axis=1).repeat(4, axis=2)))  # (16, 32, 32, 3)
    assert sum(r.color is not None for r in readings) > 0.9 * len(readings)
    acc, base = accuracy(readings, truths), chance(truths)
    # 0.08 is about 3 binomial standard deviations at 300 clips.
    assert all(acc[k] <= base[k] + 0.08 for k in ATTRIBUTES), (acc, base)


def test_blank_background_has_no_object():
    frames = np.full((16, 32, 32, 3), BACKGROUNDS["navy"], np.uint8)
    assert read_clip(frames) == Reading("navy", None, None, None)


def test_any_resolution_and_length():
    spec = ClipSpec((ShapeSpec("yellow", "square", "large", "left", "quickly"),), "gray", ((40.0, 30.0),))
    assert read_clip(render(spec, frames=8, resolution=64)) == Reading("gray", "yellow", "square", "left")


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        read_clip(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="single-object"):
        Reading.from_spec(ClipSpec((), "black", ()))
