"""Structured logs: one JSON object per line, and every line about a job carries its id."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from reelgen.service import logs
from reelgen.service.app import create_app
from tests.service.helpers import FakeGenerator, wait_until


@pytest.fixture
def captured():
    """The root logger writing JSON into a buffer; the test run's own handlers come back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    logging.captureWarnings(False)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # fails on any line that is not JSON


def test_a_json_line_has_time_level_logger_message_and_the_job_id_in_context(captured):
    log = logging.getLogger("reelgen.test")
    log.info("outside")
    with logs.job_context("video_1"):
        log.warning("inside %s", "the job")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    outside, inside, failed = _lines(captured)
    assert set(outside) == {"timestamp", "level", "logger", "message"}
    assert outside["timestamp"].endswith("+00:00") and outside["logger"] == "reelgen.test"
    assert inside == {**inside, "level": "warning", "message": "inside the job", "job_id": "video_1"}
    assert failed["job_id"] == "video_1" and "ValueError: boom" in failed["exception"]


def test_text_format_appends_the_job_id():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    record = logging.LogRecord("reelgen", logging.INFO, __file__, 1, "hello", None, None)
    with logs.job_context("video_2"):
        handler.emit(record)
    assert stream.getvalue().rstrip().endswith("reelgen: hello [video_2]")


def test_format_defaults_to_json_off_a_terminal(captured):
    logs.configure("info", None, captured)  # a StringIO is no TTY
    logging.getLogger("reelgen.test").info("plain")
    assert _lines(captured)[-1]["message"] == "plain"


def test_every_line_the_api_and_runner_write_about_a_job_carries_its_id(captured, make_settings):
    generator = FakeGenerator(step_seconds=0.02)
    with TestClient(create_app(make_settings(), [generator])) as client:
        done = client.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 3}).json()
        wait_until(lambda: client.get(f"/v1/videos/{done['id']}").json()["status"] == "completed", timeout=60,
                   message="the video to finish")
        running = client.post("/v1/videos", json={"prompt": "a blue square", "num_inference_steps": 200}).json()
        wait_until(lambda: generator.steps_run >= 5, timeout=30, message="the second video to run")
        assert client.post(f"/v1/videos/{running['id']}/cancel").status_code == 200
        assert client.delete(f"/v1/videos/{done['id']}").status_code == 200
    lines = _lines(captured)
    for video_id, messages in [(done["id"], ("queued", "completed", "deleted")), (running["id"], ("queued", "cancelled"))]:
        about = [line for line in lines if line.get("job_id") == video_id]
        for word in messages:
            assert any(line["message"].startswith(word) for line in about), (word, lines)
    # the API's lines (queued, cancelled, deleted) and the worker's (completed) each name their own job
    for line in lines:
        for video_id in (done["id"], running["id"]):
            if line["message"].startswith(("queued", "completed", "cancelled", "deleted")) and \
                    video_id in line["message"]:
                assert line["job_id"] == video_id, line
