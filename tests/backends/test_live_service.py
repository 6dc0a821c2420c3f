"""Open models through the real `reelgen serve --models-file`, driven by the official openai SDK.

Tiny random pipelines saved with save_pretrained: a text-to-video one (Wan), an image-to-video one (Wan I2V,
the first frame uploaded as input_reference), a wider Wan whose steps take a few tenths of a second, so
cancelling mid-job and per-step progress events can be watched, and a copy of the Wan with corrupt weights.
Slow: the server imports torch and diffusers.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import openai
import pytest

from reelgen.backends.tiny import tiny_registry_entry, tiny_wan
from reelgen.rendering import read_video
from tests.backends.conftest import png_bytes
from tests.service.helpers import wait_until
from tests.service.live import Server

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # the SDK's Sora notice

SLOW_SIZE = 128  # with the wider transformer: ~0.6 s a step on one shared core, 3x the events poll interval
DENOISE_SHARE = 90  # progress 0-90 is denoising (service/executors/runner.py)


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("open-models")
    slow = root / "slow-wan"
    tiny_wan(heads=8, head_dim=64, ffn_dim=2048, layers=4).save_pretrained(slow)
    broken = root / "broken-wan"  # complete on disk, so the registry accepts it; its weights do not load
    shutil.copytree(tiny_dirs["wan"], broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    models = root / "models.toml"
    models.write_text(
        tiny_registry_entry("wan", tiny_dirs["wan"])
        + tiny_registry_entry("wan-i2v", tiny_dirs["wan-i2v"])
        + tiny_registry_entry("wan", slow, "slow-wan", limits={"sizes": [f"{SLOW_SIZE}x{SLOW_SIZE}"],
                                                               "max_frames": 17})
        + tiny_registry_entry("wan", broken, "broken-wan"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REELGEN_MODELS_FILE", str(models))  # Server passes its environment to `reelgen serve`
        server = Server(root, tiny_dirs["wan"]).start()
    yield server
    server.stop()


def _finished(sdk: openai.OpenAI, video_id: str, timeout: float = 180):
    return wait_until(lambda: (v := sdk.videos.retrieve(video_id)) and v.status in ("completed", "failed", "cancelled")
                      and v, timeout=timeout, interval=0.1, message=f"{video_id} to finish")


def test_models_are_listed_with_their_limits(server):
    models = {m["id"]: m for m in server.http().get("/v1/models").json()["data"]}
    assert list(models) == ["tiny-wan", "tiny-wan-i2v", "slow-wan", "broken-wan"]
    assert (models["tiny-wan"]["sizes"], models["tiny-wan"]["seconds"], models["tiny-wan"]["fps"]) == \
        (["16x16"], ["1"], 8)
    assert not models["tiny-wan"]["image_to_video"] and models["tiny-wan-i2v"]["image_to_video"]
    assert "unipc" in models["tiny-wan"]["samplers"] and models["tiny-wan"]["default_sampler"] in \
        models["tiny-wan"]["samplers"]


def test_text_to_video_create_poll_download_decode(server):
    sdk = server.sdk()
    video = sdk.videos.create(prompt="a red circle moving left", model="tiny-wan", size="16x16", seconds="1",
                              extra_body={"num_inference_steps": 2, "seed": 5, "sampler": "unipc"})
    assert video.status == "queued" and video.model == "tiny-wan"
    done = _finished(sdk, video.id)
    assert done.status == "completed" and done.progress == 100, done
    assert done.model_extra["sampler"] == "unipc"
    assert {"model_load", "encode", "denoise", "decode", "render"} <= set(done.model_extra["timings"])
    frames, fps = read_video(sdk.videos.download_content(video.id).content)
    assert frames.shape == (9, 16, 16, 3) and fps == 8  # 1 s at 8 fps, rounded up to Wan's 4k+1 frames


def test_image_to_video_with_an_uploaded_input_reference(server):
    sdk = server.sdk()
    videos = {}
    for name, color in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        video = sdk.videos.create(prompt="the circle moves", model="tiny-wan-i2v", size="16x16", seconds="1",
                                  input_reference=(f"{name}.png", png_bytes(size=(40, 24), color=color), "image/png"),
                                  extra_body={"num_inference_steps": 2, "seed": 3})
        done = _finished(sdk, video.id)
        assert done.status == "completed", done
        videos[name], fps = read_video(sdk.videos.download_content(video.id).content)
        assert videos[name].shape == (9, 16, 16, 3)
    assert not np.array_equal(videos["red"], videos["blue"])  # same seed: only the first frame differs


@pytest.mark.parametrize(("create", "param", "message"), [
    ({"model": "tiny-wan", "input_reference": ("a.png", png_bytes(), "image/png")}, "input_reference",
     "Model tiny-wan generates from text only"),
    ({"model": "tiny-wan-i2v"}, "input_reference", "Model tiny-wan-i2v makes videos from an image"),
    ({"model": "tiny-wan", "extra_body": {"sampler": "ddim"}}, "sampler",
     "Invalid 'sampler': 'ddim' is not supported by tiny-wan; supported values are euler, unipc, dpm++."),
    ({"model": "tiny-wan", "size": "832x480"}, "size", "'832x480' is not supported by tiny-wan"),
])
def test_requests_a_model_cannot_do_get_a_400(server, create, param, message):
    with pytest.raises(openai.BadRequestError) as info:
        server.sdk().videos.create(prompt="a red circle", **create)
    error = info.value.body
    assert error["param"] == param and message in error["message"], error


def test_progress_events_come_per_denoising_step(server):
    sdk, http = server.sdk(), server.http()
    steps = 6
    video = sdk.videos.create(prompt="a red circle", model="slow-wan", size=f"{SLOW_SIZE}x{SLOW_SIZE}", seconds="2",
                              extra_body={"num_inference_steps": steps})
    with http.stream("GET", f"/v1/videos/{video.id}/events", timeout=180) as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert events[-1]["status"] == "completed"
    denoising = [e["progress"] for e in events if e["status"] == "in_progress" and 0 < e["progress"] <= DENOISE_SHARE]
    # every step, in order, each once: the worker reports after each one and the stream sends each change
    assert denoising == [done * DENOISE_SHARE // steps for done in range(1, steps + 1)], events
    frames, _ = read_video(sdk.videos.download_content(video.id).content)
    assert frames.shape == (17, SLOW_SIZE, SLOW_SIZE, 3)


def test_cancel_mid_job_stops_it_and_frees_the_worker(server):
    sdk, http = server.sdk(), server.http()
    running = sdk.videos.create(prompt="a long one", model="slow-wan", size=f"{SLOW_SIZE}x{SLOW_SIZE}",
                                seconds="2", extra_body={"num_inference_steps": 100})  # a minute if left alone
    wait_until(lambda: sdk.videos.retrieve(running.id).progress > 0, timeout=120, interval=0.05,
               message="denoising to start")
    assert http.post(f"/v1/videos/{running.id}/cancel").json()["status"] == "cancelled"
    # one worker: the next video completes only once the cancelled job has let go of it, within a step
    after = sdk.videos.create(prompt="a short one", model="tiny-wan", extra_body={"num_inference_steps": 2})
    assert _finished(sdk, after.id, timeout=30).status == "completed"
    cancelled = sdk.videos.retrieve(running.id)
    assert cancelled.status == "cancelled" and cancelled.progress < DENOISE_SHARE
    assert http.get(f"/v1/videos/{running.id}/content").status_code == 409


def test_a_model_whose_weights_do_not_load_fails_its_job_with_the_reason(server):
    sdk = server.sdk()
    video = sdk.videos.create(prompt="a red circle", model="broken-wan", extra_body={"num_inference_steps": 2})
    done = _finished(sdk, video.id)
    assert done.status == "failed" and done.error.code == "generation_failed", done
    assert "could not load model 'broken-wan' (WanPipeline) from " in done.error.message
    assert server.http().get(f"/v1/videos/{video.id}/content").status_code == 409
    # the worker and the other models are unharmed
    after = sdk.videos.create(prompt="a red circle", model="tiny-wan", extra_body={"num_inference_steps": 2})
    assert _finished(sdk, after.id).status == "completed"
