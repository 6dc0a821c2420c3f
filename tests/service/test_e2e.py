"""The real `reelgen serve` on loopback, driven by the official openai SDK: the issue's end-to-end tests.

Slow (each server start imports torch and loads the text encoder): marked `slow`.
"""

from __future__ import annotations

import signal
import time

import httpx
import openai
import pytest

from reelgen.rendering import read_video
from reelgen.service.jobs import JobStatus, JobStore
from tests.service.helpers import wait_until
from tests.service.live import Server

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # the SDK's Sora notice

FAST = {"num_inference_steps": 2}
# on the slow model, seconds long: time to act on a job mid-run once its progress shows it is running
LONG = {"num_inference_steps": 200}


@pytest.fixture(scope="module")
def server(tmp_path_factory, slow_model_dir):
    server = Server(tmp_path_factory.mktemp("e2e"), slow_model_dir).start()
    yield server
    server.stop()


def _until(sdk: openai.OpenAI, video_id: str, condition, timeout: float = 240, message: str = "a state"):
    return wait_until(lambda: (v := sdk.videos.retrieve(video_id)) and condition(v) and v, timeout=timeout,
                      interval=0.1, message=f"{video_id}: {message}")


def _finished(sdk: openai.OpenAI, video_id: str):
    return _until(sdk, video_id, lambda v: v.status in ("completed", "failed", "cancelled"), message="finished")


def test_the_openai_sdk_creates_polls_downloads_lists_remixes_and_deletes(server):
    sdk = server.sdk()
    video = sdk.videos.create(prompt="a red circle moving right", size="256x256", seconds="1",
                              extra_body={**FAST, "seed": 11})
    assert video.status == "queued" and video.model == "reelgen-shapes"
    done = _finished(sdk, video.id)
    assert done.status == "completed" and done.progress == 100 and done.model_extra["seed"] == 11

    frames, fps = read_video(sdk.videos.download_content(video.id).content)
    assert frames.shape == (8, 256, 256, 3) and fps == 8
    assert sdk.videos.download_content(video.id, variant="thumbnail").content[:2] == b"\xff\xd8"

    assert video.id in [v.id for v in sdk.videos.list(limit=100).data]

    remix = sdk.videos.remix(video.id, prompt="a blue square moving left")
    assert remix.remixed_from_video_id == video.id
    assert _finished(sdk, remix.id).status == "completed"

    deleted = sdk.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(video.id)
    assert not (server.root / "data" / "files" / "videos" / video.id).exists()


def test_cancel_mid_job_frees_the_worker(server):
    sdk, http = server.sdk(), server.http()
    running = sdk.videos.create(prompt="a long one", extra_body=LONG)
    _until(sdk, running.id, lambda v: v.progress > 0, message="denoising to start")
    cancelled = http.post(f"/v1/videos/{running.id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    # one worker: the next video completes only once the cancelled one has let go of it
    after = sdk.videos.create(prompt="a short one", extra_body=FAST)
    assert _finished(sdk, after.id).status == "completed"
    assert sdk.videos.retrieve(running.id).status == "cancelled"
    assert http.get(f"/v1/videos/{running.id}/content").status_code == 409
    with pytest.raises(openai.ConflictError):
        sdk.videos.remix(running.id, prompt="again")


def test_ranges_and_signed_links_over_http(server):
    sdk, http = server.sdk(), server.http()
    video = _finished(sdk, sdk.videos.create(prompt="a green triangle", extra_body=FAST).id)
    url = f"/v1/videos/{video.id}/content"
    whole = http.get(url).content
    part = http.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert http.get(url, headers={"Range": f"bytes={len(whole)}-"}).status_code == 416

    # Two links: a long one that must work, a short one that must expire (one link doing both races a busy machine).
    lasting = http.post(f"/v1/videos/{video.id}/link", json={"expires_in": 600}).json()
    link = http.post(f"/v1/videos/{video.id}/link", json={"expires_in": 1}).json()
    anonymous = httpx.Client(timeout=30)
    assert httpx.get(f"{server.url}{url}").status_code == 401  # no key, no link: no video
    shared = anonymous.get(lasting["url"])
    assert shared.status_code == 200 and shared.content == whole
    wait_until(lambda: time.time() > link["expires_at"] + 1, timeout=10, message="the link to expire")
    expired = anonymous.get(link["url"])
    assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]


def test_every_bad_input_class_gets_its_4xx(server):
    sdk, http = server.sdk(), server.http()
    for kwargs, param in [({"size": "1280x720"}, "size"), ({"seconds": "8"}, "seconds"), ({"model": "sora-2"}, "model"),
                          ({"extra_body": {"num_inference_steps": 0}}, "num_inference_steps"),
                          ({"extra_body": {"no_such_option": 1}}, "no_such_option")]:
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.videos.create(prompt="x", **kwargs)
        assert raised.value.body["param"] == param, raised.value.body
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve("video_missing")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).videos.list()
    too_big = http.post("/v1/videos", content=b"x" * (11 * 2**20), headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert http.post("/v1/videos", content=b"hi", headers={"Content-Type": "text/plain"}).status_code == 415
    assert http.post("/v1/videos", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400


def test_a_job_survives_sigkill_and_sigterm_of_its_server(tmp_path, slow_model_dir):
    server = Server(tmp_path, slow_model_dir).start()
    try:
        sdk = server.sdk()
        # SIGKILL mid-job: the lease lapses and the restarted server runs the job again, to one output
        killed = sdk.videos.create(prompt="survives a crash", extra_body=LONG)
        _until(sdk, killed.id, lambda v: v.progress > 0, message="denoising to start")
        assert server.signal(signal.SIGKILL) == -signal.SIGKILL
        server.start()
        done = _finished(sdk, killed.id)
        assert done.status == "completed" and done.model_extra["attempts"] == 2
        assert read_video(sdk.videos.download_content(killed.id).content)[0].shape == (8, 256, 256, 3)
        assert [p.name for p in (tmp_path / "data" / "files" / "videos" / killed.id / "attempts").iterdir()] == ["2"]

        # SIGTERM mid-job: the server stops promptly and gives the job back, without spending an attempt
        stopped = sdk.videos.create(prompt="survives a shutdown", extra_body=LONG)
        _until(sdk, stopped.id, lambda v: v.progress > 0, message="denoising to start")
        # uvicorn shuts down cleanly, then re-raises the signal so the exit status still says SIGTERM
        assert server.signal(signal.SIGTERM) == -signal.SIGTERM
        assert "Application shutdown complete" in server.log.read_text()
        store = JobStore(f"sqlite:///{tmp_path / 'data' / 'jobs.db'}")
        job = store.get(stopped.id)
        store.close()
        # queued like any new job, so the next server takes it as the first one above was taken
        assert (job.status, job.attempts, job.lease_owner) == (JobStatus.QUEUED, 0, None)
    finally:
        server.stop()
