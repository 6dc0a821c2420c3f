"""`reelgen plan`: stage timings from a file, a video list or a job store, and the plan it prints."""

from __future__ import annotations

import json

import pytest

from reelgen.cli import main
from reelgen.scaling.timings import mean_timings, timings_from_json
from reelgen.service.jobs import JobStore
from tests.service.helpers import new_job

STAGES = {"queue_wait": 3.0, "model_load": 1.0, "encode_text": 0.05, "denoise": 10.0, "decode": 0.05, "render": 0.5}


def test_queue_wait_and_model_load_are_not_service_time():
    assert mean_timings([STAGES, {**STAGES, "denoise": 12.0}]) == {
        "decode": 0.05, "denoise": 11.0, "encode_text": 0.05, "render": 0.5}


def test_a_video_list_plans_from_its_completed_videos_only():
    videos = {"object": "list", "data": [
        {"object": "video", "id": "a", "status": "completed", "timings": {"denoise": 2.0, "render": 1.0}},
        {"object": "video", "id": "b", "status": "completed", "timings": {"denoise": 4.0, "render": 1.0}},
        {"object": "video", "id": "c", "status": "failed", "timings": {"denoise": 100.0}},
    ]}
    assert timings_from_json(videos) == {"denoise": 3.0, "render": 1.0}
    with pytest.raises(ValueError, match="no timings"):
        timings_from_json({"object": "video", "id": "q", "status": "queued", "timings": {}})
    with pytest.raises(ValueError, match="expected"):
        timings_from_json(["denoise"])


def test_plan_from_a_timings_file_matches_the_worked_example(tmp_path, capsys):
    path = tmp_path / "timings.json"
    path.write_text(json.dumps(STAGES))
    assert main(["plan", "--rate", "200/min", "--target-latency", "12s", "--timings", str(path),
                 "--devices", "1,2,4,8", "--alpha", "0.011"]) == 0
    rows = {line.split()[0] + line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    # docs/scaling.md: a 12 s target makes the one-device plan latency-bound at 44 replicas
    assert rows["1device"][3] == "44" and rows["1device"][-1] == "latency"
    assert rows["2devices"][3] == "23" and rows["4devices"][3] == "13"


def test_plan_from_a_job_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    store.create_schema()
    for seconds in (4.0, 6.0):
        job = store.add(new_job())
        claimed = store.claim("w")
        assert store.complete(claimed.id, claimed.lease_token, {"queue_wait": 9.0, "denoise": seconds})
        assert job.id == claimed.id
    store.close()
    assert main(["plan", "--rate", "30/min", "--target-latency", "60s", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "one job on one device: 5.000 s (denoise 5.000)" in out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["plan", "--rate", "fast", "--target-latency", "60s", "--seconds-per-job", "5"]) == 2
    assert "200/min" in capsys.readouterr().err
    assert main(["plan", "--rate", "200/min", "--target-latency", "5s", "--seconds-per-job", "10"]) == 2
    assert "more than the 5 s target" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    store = JobStore(f"sqlite:///{empty}")
    store.create_schema()
    store.close()
    assert main(["plan", "--rate", "1/min", "--target-latency", "60s", "--database-url", f"sqlite:///{empty}"]) == 2
    assert "no completed job" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one source of timings is required
        main(["plan", "--rate", "1/min", "--target-latency", "60s"])
