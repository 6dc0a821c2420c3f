import numpy as np

from reelgen.data.captions import EVAL_TEMPLATES, HELD_OUT_VERBS, SHAPE_WORDS, TRAIN_TEMPLATES, VERBS
from reelgen.data.dataset import ShapesWorld
from reelgen.data.world import (BACKGROUNDS, COLORS, HELD_OUT_COMBINATIONS, SIZES, is_held_out, sample_spec,
                                velocity)


def test_clips_are_a_pure_function_of_seed_and_index():
    a, b = ShapesWorld("train", seed=7), ShapesWorld("train", seed=7)
    for i in (0, 5, 123):
        sa, sb = a[i], b[i]
        assert np.array_equal(sa.frames, sb.frames) and sa.caption == sb.caption
    assert not np.array_equal(a[0].frames, ShapesWorld("train", seed=8)[0].frames)


def test_clip_format():
    s = ShapesWorld("train")[0]
    assert s.frames.shape == (16, 32, 32, 3) and s.frames.dtype == np.uint8
    big = ShapesWorld("train", resolution=64, frames=8)[0]
    assert big.frames.shape == (8, 64, 64, 3)


def test_held_out_combinations_never_reach_training():
    seen = set()
    for i in range(2000):
        spec = sample_spec(np.random.default_rng(i), held_out="exclude", two_objects_prob=0.5)
        assert not any(is_held_out(o) for o in spec.objects)
        seen |= {(o.color, o.shape) for o in spec.objects}
    assert len(seen) == 8 * 3 - len(HELD_OUT_COMBINATIONS)  # everything else does appear
    for i in range(200):
        obj = sample_spec(np.random.default_rng(i), held_out="only", two_objects_prob=0.0).objects[0]
        assert (obj.color, obj.shape) in HELD_OUT_COMBINATIONS


def test_captions_name_colour_background_and_shape_synonym():
    world = ShapesWorld("train")
    for i in range(200):
        s = world[i]
        for obj in s.spec.objects:
            assert obj.color in s.caption
            assert any(w in s.caption for w in SHAPE_WORDS[obj.shape])
        assert s.spec.background in s.caption


def test_evaluation_phrasings_are_disjoint_from_training():
    assert not set(EVAL_TEMPLATES) & set(TRAIN_TEMPLATES)
    assert not set(HELD_OUT_VERBS) & set(VERBS)
    train_captions = {ShapesWorld("train")[i].caption for i in range(300)}
    eval_captions = {ShapesWorld("eval")[i].caption for i in range(100)}
    assert not train_captions & eval_captions


def test_objects_stay_inside_the_frame_and_move_as_captioned():
    world = ShapesWorld("eval")
    for i in range(100):
        s = world[i]
        obj, (x0, y0) = s.spec.objects[0], s.spec.starts[0]
        vx, vy = velocity(obj, 32)
        r = SIZES[obj.size]
        for f in (0, 15):
            x, y = x0 + vx * f, y0 + vy * f
            assert r - 1 <= x <= 32 - r + 1 and r - 1 <= y <= 32 - r + 1
        # Fully covered pixels (edges are anti-aliased) really have the object's colour.
        bg = np.array(BACKGROUNDS[s.spec.background])
        pixels = s.frames[0].reshape(-1, 3).astype(int)
        farthest = pixels[np.abs(pixels - bg).sum(-1).argmax()]
        assert np.abs(farthest - COLORS[obj.color]).sum() <= 3


def test_batch_stacks_frames_and_captions():
    frames, captions = ShapesWorld("train").batch(range(3))
    assert frames.shape == (3, 16, 32, 32, 3) and len(captions) == 3
