"""Two gloo processes give what one process gives: CFG, sequence and window parallelism.

One job of model-step checks runs always; whole videos, 4 ranks and torchrun are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reelgen.diffusion.guidance import guided_prediction
from reelgen.parallel.launch import run_ranks
from reelgen.parallel.sequence import bytes_per_forward
from reelgen.pipelines.long_video import LongVideoPipeline
from reelgen.pipelines.request import GenerationRequest
from tests.parallel import ranks
from tests.tiny import make_tiny_model

# float32, the same weights and inputs: only the order of floating-point sums may differ.
ATOL = 1e-5


@pytest.fixture(scope="module")
def results():
    return run_ranks(ranks.forward_checks, 2)


@pytest.fixture(scope="module")
def videos():
    return run_ranks(ranks.video_checks, 2)


def _max_grey_level_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("frames, batch", [(8, 1), (5, 2)])
def test_sequence_parallel_forward_equals_one_process(results, frames, batch):
    with torch.no_grad():
        expected = make_tiny_model()(*ranks.model_inputs(frames, batch))
    for rank in results:
        torch.testing.assert_close(rank[f"sequence_model_{frames}x{batch}"], expected, atol=ATOL, rtol=0)


def test_sequence_parallel_sends_the_bytes_it_should(results):
    cfg = make_tiny_model().cfg
    assert results[0]["sequence_bytes_8x1"] == bytes_per_forward(cfg, batch=1, frames=8, world=2)


def test_cfg_parallel_prediction_equals_batched_guidance(results):
    with torch.no_grad():
        expected = guided_prediction(make_tiny_model(), *ranks.guidance_inputs(), 5.0)
    for rank in results:
        torch.testing.assert_close(rank["cfg_prediction"], expected, atol=ATOL, rtol=0)
    assert results[0]["cfg_bytes"] == expected.numel() * 4  # one prediction each way


def test_long_video_windows_spread_over_ranks_blend_as_one_process(results):
    with torch.no_grad():
        expected = ranks.pipeline(LongVideoPipeline).predict(*ranks.guidance_inputs(20), 5.0)
    assert expected.shape[2] == 20
    for rank in results:
        torch.testing.assert_close(rank["windows_prediction"], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("cls, key, frames", [(None, "cfg_video", 8), (None, "sequence_video", 7),
                                              (LongVideoPipeline, "windows_video", 20)])
def test_parallel_pipelines_give_the_one_process_video(videos, cls, key, frames):
    expected = ranks.pipeline(cls)([GenerationRequest(frames=frames, **ranks.REQUEST)])
    assert np.array_equal(videos[0][key], videos[1][key])  # every rank ends with the same video
    assert _max_grey_level_difference(videos[0][key], expected) <= 1


@pytest.mark.slow
def test_cfg_and_sequence_parallel_on_four_ranks_give_the_one_process_video():
    videos = run_ranks(ranks.four_rank_video, 4)
    expected = ranks.pipeline()([GenerationRequest(frames=8, **ranks.REQUEST)])
    assert all(np.array_equal(v, videos[0]) for v in videos)
    assert _max_grey_level_difference(videos[0], expected) <= 1
