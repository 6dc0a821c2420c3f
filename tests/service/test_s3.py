"""The service on S3: moto's server on a loopback port stands in for S3 (or MinIO), started and stopped here.

What moto does not do: it never checks a presigned URL's expiry (real S3 and MinIO answer 403 after it), so
expiry is checked on the URL's signed X-Amz-Date and X-Amz-Expires parameters instead.
"""

from __future__ import annotations

import calendar
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import s3fs
from fastapi.testclient import TestClient

from reelgen.backends.base import GenerationCancelled
from reelgen.service.storage import attempt_prefix, job_prefix, output_key
from tests.service.helpers import FakeGenerator, wait_until

pytestmark = pytest.mark.slow

PREFIX = "reelgen"


class MotoServer:
    """`python -m moto.server` on a free loopback port; stop() and start() again keep the port (not the data)."""

    def __init__(self, log_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> MotoServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                             str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=timeout, interval=0.05, message=f"moto to answer on {self.endpoint}")
        return self

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process = None
        wait_until(lambda: not self._answers(), timeout=10, message="moto's port to close")

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
            return True
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    # credentials and region as a deployment gives them: the usual AWS variables, read by botocore itself
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                                     "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3(moto):
    """A client of moto of its own (not the service's), and a new bucket on it."""
    fs = s3fs.S3FileSystem(endpoint_url=moto.endpoint, use_listings_cache=False, skip_instance_cache=True)
    fs.bucket = f"reelgen-{uuid.uuid4().hex[:12]}"
    fs.mkdir(fs.bucket)
    yield fs
    if moto.process is None:  # a test stopped moto and failed before starting it again
        moto.start()


@pytest.fixture
def make_client(open_app, moto, s3):
    def make(generator=None, **settings):
        settings = dict(storage_url=f"s3://{s3.bucket}/{PREFIX}", storage_endpoint_url=moto.endpoint) | settings
        return open_app([generator or FakeGenerator()], **settings)

    return make


class GatedGenerator(FakeGenerator):
    """Each generation waits for one `gate.release()`, so a test decides when a job reaches its storing step."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.started = 0

    def generate(self, requests, *, on_step=None, cancel=None):
        self.started += 1
        while not self.gate.acquire(timeout=0.05):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled at the gate")
        return super().generate(requests, on_step=on_step, cancel=cancel)


def _create(client) -> str:
    response = client.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 2})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _wait(client, video_id: str, *statuses: str) -> dict:
    return wait_until(lambda: (v := client.get(f"/v1/videos/{video_id}").json())["status"] in statuses and v,
                      timeout=60, message=f"{video_id} to be {' or '.join(statuses)}")


def _finish(client) -> dict:
    return _wait(client, _create(client), "completed", "failed")


def _object(s3, client, video_id: str, variant: str = "video") -> str:
    """The bucket path of one file of a completed video: under the job-derived key of the attempt that won."""
    job = client.app.state.services.store.get(video_id)
    return f"{s3.bucket}/{PREFIX}/{output_key(video_id, job.output_token, variant, job.format)}"


def _presigned(client, path: str, **params) -> tuple[str, dict[str, str]]:
    response = client.get(path, params=params, follow_redirects=False)
    assert response.status_code == 307, response.text
    assert response.headers["cache-control"] == "no-store"
    url = response.headers["location"]
    return url, {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def test_a_video_is_stored_under_its_key_and_downloads_by_a_presigned_redirect(make_client, s3, moto):
    client = make_client(presign_seconds=120)
    video = _finish(client)
    assert video["status"] == "completed", video
    for variant in ("video", "thumbnail", "spritesheet"):
        assert s3.exists(_object(s3, client, video["id"], variant)), variant
    stored = s3.cat_file(_object(s3, client, video["id"]))
    assert stored[4:8] == b"ftyp"  # an MP4, whole

    url, query = _presigned(client, f"/v1/videos/{video['id']}/content")
    assert url.startswith(f"{moto.endpoint}/{s3.bucket}/{PREFIX}/videos/{video['id']}/attempts/")
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and query["X-Amz-Expires"] == "120"
    download = httpx.get(url)  # no API key, no service: the store answers
    assert download.status_code == 200 and download.content == stored
    assert download.headers["content-type"] == "video/mp4"
    assert download.headers["content-disposition"] == f'inline; filename="{video["id"]}.video.mp4"'
    assert httpx.get(url, headers={"Range": "bytes=0-9"}).content == stored[:10]  # ranges are the store's work

    url, _ = _presigned(client, f"/v1/videos/{video['id']}/content", variant="thumbnail")
    thumbnail = httpx.get(url)
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content == s3.cat_file(_object(s3, client, video["id"], "thumbnail"))
    # the service counts the redirected bytes as served
    assert client.app.state.services.store.get(video["id"]).bytes_served == len(stored) + len(thumbnail.content)


def test_presigned_urls_expire_with_the_setting_and_never_outlive_a_signed_link(make_client, s3):
    client = make_client(presign_seconds=1)
    video = _finish(client)
    before = time.time()
    url, query = _presigned(client, f"/v1/videos/{video['id']}/content")
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    assert query["X-Amz-Expires"] == "1" and before - 2 <= signed_at <= time.time() + 1  # dead 1 s after signing
    assert httpx.get(url).status_code == 200  # (moto serves it even later: see the module docstring)

    client = make_client(presign_seconds=3600)
    link = client.post(f"/v1/videos/{video['id']}/link", json={"expires_in": 30}).json()
    path, _, link_query = link["url"].partition("?")
    _, query = _presigned(client, urlsplit(path).path, **{k: v[0] for k, v in parse_qs(link_query).items()})
    assert 1 <= int(query["X-Amz-Expires"]) <= 30  # the store's URL ends no later than the link


def test_delete_removes_every_object_of_the_video(make_client, s3):
    client = make_client()
    video = _finish(client)
    assert s3.exists(_object(s3, client, video["id"]))
    assert client.delete(f"/v1/videos/{video['id']}").status_code == 200
    assert not s3.exists(f"{s3.bucket}/{PREFIX}/{job_prefix(video['id'])}")
    assert client.get(f"/v1/videos/{video['id']}").status_code == 404


def test_retention_sweeps_the_objects_of_expired_videos(make_client, s3):
    client = make_client(retention_hours=1 / 3600)  # one second
    video = _finish(client)
    wait_until(lambda: client.app.state.services.store.get(video["id"]).files_deleted, timeout=30,
               message="the retention sweep")
    assert not s3.exists(f"{s3.bucket}/{PREFIX}/{job_prefix(video['id'])}")
    assert client.get(f"/v1/videos/{video['id']}/content").json()["error"]["code"] == "video_expired"


def test_readyz_reports_storage_not_ok_while_s3_is_down(make_client, s3, moto):
    client = make_client()
    assert client.get("/readyz").status_code == 200
    moto.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert not checks["storage"]["ok"] and "Could not connect" in checks["storage"]["detail"]
    assert checks["database"]["ok"] and checks["models"]["ok"]
    moto.start()  # empty again: the bucket has to be made anew, as after losing a real one
    assert client.get("/readyz").status_code == 503
    s3.mkdir(s3.bucket)
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, message="ready again")


def _generating_when_s3_stops(make_client, moto, max_attempts: int) -> tuple[TestClient, GatedGenerator, str]:
    """A job whose first attempt is generating when moto stops; it reaches its storing step at gate.release()."""
    generator = GatedGenerator()
    client = make_client(generator, storage_retry_seconds=0.5, max_attempts=max_attempts)
    video_id = _create(client)
    wait_until(lambda: generator.started == 1, message="the first attempt to start generating")
    moto.stop()
    return client, generator, video_id


def test_a_job_stored_during_an_outage_is_retried_and_completes_once_s3_is_back(make_client, s3, moto):
    client, generator, video_id = _generating_when_s3_stops(make_client, moto, max_attempts=3)
    generator.gate.release()  # attempt 1 renders and cannot store: re-queued, generated again
    wait_until(lambda: generator.started == 2, message="the second attempt")
    job = client.app.state.services.store.get(video_id)
    assert job.status == "in_progress" and job.attempts == 2 and job.output_token is None

    moto.start()
    s3.mkdir(s3.bucket)
    generator.gate.release()
    video = _wait(client, video_id, "completed", "failed")
    assert video["status"] == "completed", video
    key = _object(s3, client, video_id)
    assert client.app.state.services.store.get(video_id).output_token == 2 and s3.exists(key)
    url, _ = _presigned(client, f"/v1/videos/{video_id}/content")
    assert httpx.get(url).content == s3.cat_file(key)
    # nothing of the first attempt made it to the store
    assert not s3.exists(f"{s3.bucket}/{PREFIX}/{attempt_prefix(video_id, 1)}")


def test_a_job_out_of_attempts_while_s3_is_down_fails_with_the_reason(make_client, s3, moto):
    client, generator, video_id = _generating_when_s3_stops(make_client, moto, max_attempts=1)
    try:
        generator.gate.release()
        video = _wait(client, video_id, "completed", "failed")
        assert video["status"] == "failed", video
        assert video["error"]["code"] == "storage_unavailable"
        assert f"s3://{s3.bucket}/{PREFIX}" in video["error"]["message"]
        assert "Could not connect" in video["error"]["message"]
        response = client.get(f"/v1/videos/{video_id}/content")
        assert response.status_code == 409 and response.json()["error"]["code"] == "video_not_completed"
    finally:
        moto.start()
