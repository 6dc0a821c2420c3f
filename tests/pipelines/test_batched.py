"""Batched generation: every request of a batch keeps its own seed, prompt, guidance, progress and cancel."""

import threading

import numpy as np
import pytest

from reelgen.pipelines.request import GenerationRequest

# Batched matmuls may round differently from single ones; after uint8 quantization that is at most 1 grey level.
TOLERANCE = 1


def _req(**kw):
    base = dict(prompt="a red ball moving left on a black background", seed=3, steps=3, frames=8)
    return GenerationRequest(**{**base, **kw})


def _alone(pipeline, request):
    return pipeline([request])[0]


def _close(a, b) -> bool:
    return np.abs(a.astype(int) - b.astype(int)).max() <= TOLERANCE


@pytest.mark.parametrize("sampler", ["dpm++", "ddpm"])  # a multistep sampler and a stochastic one
def test_each_batched_request_equals_its_solo_run(tiny_pipeline, sampler):
    requests = [_req(sampler=sampler, seed=1), _req(sampler=sampler, seed=2, prompt="a blue box sliding up"),
                _req(sampler=sampler, seed=3, guidance_scale=2.0, negative_prompt="red"),
                _req(sampler=sampler, seed=1, guidance_scale=1.0)]
    videos = tiny_pipeline.generate_each(requests)
    for request, video in zip(requests, videos):
        assert video.shape == (8, 16, 16, 3)
        assert _close(video, _alone(tiny_pipeline, request))
    # and each is its own: seeds, prompts and guidance all reach their video
    assert len({v.tobytes() for v in videos}) == len(videos)


def test_one_batch_composition_is_deterministic(tiny_pipeline):
    requests = [_req(seed=s, guidance_scale=g) for s, g in ((5, 5.0), (6, 3.0), (7, 5.0))]
    a, b = tiny_pipeline.generate_each(requests), tiny_pipeline.generate_each(requests)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_progress_runs_per_request_after_every_step(tiny_pipeline):
    seen = {0: [], 1: []}
    tiny_pipeline.generate_each([_req(steps=4), _req(steps=4, seed=9)],
                                on_steps=[lambda d, t, k=k: seen[k].append((d, t)) for k in seen])
    assert seen[0] == seen[1] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_cancelled_request_leaves_the_batch_within_one_step_and_the_others_go_on(tiny_pipeline):
    cancel = threading.Event()
    seen = {0: [], 1: [], 2: []}

    def on_step(k):
        def record(done, total):
            seen[k].append(done)
            if k == 1 and done == 2:
                cancel.set()
        return record

    requests = [_req(steps=6, seed=s) for s in (1, 2, 3)]
    videos = tiny_pipeline.generate_each(requests, on_steps=[on_step(k) for k in seen],
                                         cancels=[None, cancel, None])
    assert videos[1] is None and seen[1] == [1, 2]
    assert seen[0] == seen[2] == [1, 2, 3, 4, 5, 6]
    for k in (0, 2):  # the batch shrank mid-run: still their own videos
        assert _close(videos[k], _alone(tiny_pipeline, requests[k]))


def test_a_batch_must_share_frames_steps_and_sampler(tiny_pipeline):
    for other in (_req(frames=6), _req(steps=2), _req(sampler="ddim")):
        with pytest.raises(ValueError, match="share"):
            tiny_pipeline.generate_each([_req(), other])
