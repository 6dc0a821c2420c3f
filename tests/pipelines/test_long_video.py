import numpy as np
import pytest
import torch

from reelgen.pipelines.long_video import LongVideoPipeline, temporal_windows, window_edges, window_weights
from reelgen.pipelines.request import GenerationRequest
from reelgen.pipelines.text_to_video import TextToVideoPipeline
from tests.tiny import make_tiny_model


def _req(**kw):
    base = dict(prompt="a red ball moving left on a black background", seed=3, steps=2, frames=8)
    return GenerationRequest(**{**base, **kw})


@pytest.mark.parametrize("total, length, overlap, expected", [
    (48, 16, 8, [(0, 16), (8, 24), (16, 32), (24, 40), (32, 48)]),
    (40, 16, 8, [(0, 16), (8, 24), (16, 32), (24, 40)]),
    (20, 8, 4, [(0, 8), (4, 12), (8, 16), (12, 20)]),
    (48, 16, 0, [(0, 16), (16, 32), (32, 48)]),
    (10, 8, 0, [(0, 8), (2, 10)]),  # the last window moves back to keep the native length
    (6, 8, 4, [(0, 6)]),
])
def test_windows_cover_the_clip_at_the_native_length(total, length, overlap, expected):
    assert temporal_windows(total, length, overlap) == expected


@pytest.mark.parametrize("overlap", [-1, 16])
def test_overlap_must_leave_the_windows_moving(overlap):
    with pytest.raises(ValueError, match="overlap"):
        temporal_windows(40, 16, overlap)


def test_weights_ramp_across_overlaps_and_sum_to_one():
    windows = [(0, 8), (4, 12), (8, 16), (12, 20)]
    weights = window_weights(windows)
    assert torch.allclose(weights[0], torch.tensor([1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]))
    assert torch.allclose(weights[1], torch.tensor([0.2, 0.4, 0.6, 0.8, 0.8, 0.6, 0.4, 0.2]))
    assert torch.allclose(weights[3], torch.tensor([0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1]))
    for total, length, overlap in [(20, 8, 4), (40, 16, 8), (37, 16, 5), (10, 8, 0)]:
        windows = temporal_windows(total, length, overlap)
        norm = torch.zeros(total)
        for (s, e), w in zip(windows, window_weights(windows)):
            norm[s:e] += w
        assert torch.allclose(norm, torch.ones(total)), (total, length, overlap)


def test_window_edges_are_where_windows_start_or_end():
    assert window_edges([(0, 16), (8, 24), (16, 32)]) == [8, 16, 24]
    assert window_edges([(0, 16), (16, 32), (32, 48)]) == [16, 32]


@pytest.fixture(scope="module")
def long_pipeline(text_encoder):
    return LongVideoPipeline(make_tiny_model(), text_encoder)


def test_up_to_the_native_length_it_is_the_text_to_video_pipeline(long_pipeline, text_encoder):
    short = TextToVideoPipeline(make_tiny_model(), text_encoder)
    for frames in (5, 8):
        assert np.array_equal(long_pipeline([_req(frames=frames)]), short([_req(frames=frames)]))


def test_generates_more_frames_than_the_model_knows(long_pipeline):
    assert long_pipeline.max_frames == 64  # 8 native lengths of 8
    out = long_pipeline([_req(frames=20)])
    assert out.shape == (1, 20, 16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out, long_pipeline([_req(frames=20)]))


def test_bad_lengths_fail_early(long_pipeline, text_encoder):
    with pytest.raises(ValueError, match="frames"):
        long_pipeline([_req(frames=65)])
    with pytest.raises(ValueError, match="overlap"):
        LongVideoPipeline(make_tiny_model(), text_encoder, overlap=8)
