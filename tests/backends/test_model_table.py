"""The family table: frame rules, API seconds -> frames, sizes."""

from __future__ import annotations

import pytest

from reelgen.backends.model_table import FAMILIES, family_spec, parse_size


@pytest.mark.parametrize(("family", "seconds", "frames"), [
    ("wan", {"1": 17, "5": 81}, "81"),
    ("cogvideox", {"1": 9, "6": 49}, "49"),
    ("ltx", {"1": 25, "5": 129, "6": 153}, "129"),
    ("hunyuan-video", {"1": 25, "5": 121}, "121"),
    ("svd", {"1": 7, "2": 14, "3": 21}, "14"),
])
def test_api_seconds_map_onto_valid_frame_counts(family, seconds, frames):
    spec = family_spec(FAMILIES[family], family)
    for s, n in seconds.items():
        assert spec.frames_for(s) == n
        spec.check_frames(n)
    assert spec.frames_for(spec.default_seconds) == int(frames)
    assert all((n - spec.frames_offset) % spec.frames_step == 0 for n in spec.frame_counts())
    assert spec.frame_counts()[-1] <= spec.max_frames


def test_check_frames_names_the_allowed_values():
    spec = family_spec(FAMILIES["cogvideox"], "cog")
    with pytest.raises(ValueError, match=r"model cog generates 9, 17, 25, 33, 41, 49 frames \(8k\+1\), got 48"):
        spec.check_frames(48)
    long = family_spec(FAMILIES["wan"], "wan")
    with pytest.raises(ValueError, match=r"generates 5, 9, 13, 17, \.\.\., 77, 81 frames \(4k\+1\), got 80"):
        long.check_frames(80)


def test_builtin_style_specs_keep_their_old_frame_mapping():
    from reelgen.backends.base import ModelSpec

    spec = ModelSpec(id="b", description="", native_size=(32, 32), fps=8, max_frames=16, sizes=("256x256",),
                     default_size="256x256", default_seconds="2")
    assert [spec.frames_for(s) for s in spec.seconds] == [8, 16]
    assert spec.frame_counts() == list(range(2, 17))


def test_table_defaults_become_the_spec():
    spec = family_spec(FAMILIES["wan-i2v"], "i2v")
    assert spec.native_size == (832, 480) and spec.default_size == "832x480"
    assert spec.image_to_video and spec.requires_image
    assert spec.default_steps == 50 and spec.default_guidance_scale == 5.0
    limited = family_spec(FAMILIES["wan"], "w", max_frames=33)
    assert limited.default_seconds == "2"  # the family's 5 s no longer fits: the longest that does


@pytest.mark.parametrize("size", ["832", "832x", "x480", "0x480", "832*480", None])
def test_parse_size_rejects(size):
    with pytest.raises(ValueError, match="size must look like '832x480'"):
        parse_size(size)


def test_every_family_pipeline_exists_in_diffusers():
    import diffusers

    for family in FAMILIES.values():
        assert hasattr(diffusers, family.pipeline), family.pipeline
