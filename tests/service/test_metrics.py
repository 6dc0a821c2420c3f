"""Prometheus metrics and cost accounting, in-process: what /metrics and GET /v1/usage report after real jobs."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reelgen.service import usage
from reelgen.service.jobs import JobStore
from reelgen.service.metrics import ServiceMetrics, StoreCollector, WorkerUtilization
from tests.service.helpers import FakeClock, FakeGenerator, new_job, wait_until

TERMINAL = ("completed", "failed", "cancelled")
# one unit per second of compute, per GB-month and per GB: costs equal quantities, easy to check exactly
PRICES = dict(device_prices_per_hour={"cpu": 3600.0, "cuda": 7200.0}, storage_price_per_gb_month=730.0,
              egress_price_per_gb=1.0, retention_hours=2.0)


@pytest.fixture
def make_client(open_app):
    return lambda generator, **settings: open_app([generator], **(PRICES | settings))


def _run(client, **body) -> dict:
    created = client.post("/v1/videos", json={"prompt": "a red circle", **body})
    assert created.status_code == 200, created.text
    return wait_until(lambda: (v := client.get(f"/v1/videos/{created.json()['id']}").json())["status"] in TERMINAL
                      and v, timeout=60, message="the video to finish")


def _samples(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def _value(samples, name: str, **labels) -> float:
    # a labelled series appears at its first increment: absent means 0
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_completed_job_shows_in_states_stages_requests_errors_and_usage(make_client):
    client = make_client(FakeGenerator(step_seconds=0.02, load_seconds=0.05))
    video = _run(client, num_inference_steps=5)
    assert video["status"] == "completed"
    url = f"/v1/videos/{video['id']}/content"
    size = len(client.get(url).content)
    assert client.get(url, headers={"Range": "bytes=0-99"}).status_code == 206
    assert client.get("/v1/videos/video_missing").status_code == 404
    assert client.get("/no/such/path").status_code == 404

    samples = _samples(client)
    assert _value(samples, "reelgen_jobs", state="completed") == 1
    assert _value(samples, "reelgen_jobs", state="queued") == 0 and _value(samples, "reelgen_queue_depth") == 0
    assert _value(samples, "reelgen_jobs_finished_total", status="completed") == 1
    for stage in ("queue_wait", "model_load", "encode_text", "denoise", "decode", "render", "store"):
        assert _value(samples, "reelgen_job_stage_duration_seconds_count", stage=stage) == 1, stage
    assert _value(samples, "reelgen_job_stage_duration_seconds_count", stage="delivery") == 2  # both downloads
    assert _value(samples, "reelgen_job_stage_duration_seconds_sum", stage="model_load") == pytest.approx(0.05)
    # route templates, not paths: one series per route however many videos there are
    assert _value(samples, "reelgen_http_requests_total", method="GET", route="/v1/videos/{video_id}/content",
                  status="206") == 1
    assert _value(samples, "reelgen_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert _value(samples, "reelgen_http_errors_total", status="404", code="video_not_found") == 1
    assert _value(samples, "reelgen_http_errors_total", status="404", code="not_found") == 1
    # the fake model waited 5 steps of 0.02 s and a 0.05 s load: at least that much busy time
    assert _value(samples, "reelgen_worker_busy_seconds_total") >= 0.15
    assert _value(samples, "reelgen_workers") == 1 and _value(samples, "reelgen_workers_busy") == 0

    # usage on the video: compute in seconds, the stored files' bytes, the downloaded bytes
    job_usage = client.get(f"/v1/videos/{video['id']}").json()["usage"]
    storage = client.app.state.services.storage
    stored = sum(storage.info(key).size for attempt in storage.children(f"videos/{video['id']}/attempts")
                 for key in storage.children(attempt))
    assert job_usage["bytes_stored"] == stored > 0
    assert job_usage["bytes_served"] == size + 100
    seconds = job_usage["compute_seconds"]["cpu"]
    assert 0.15 <= seconds < 10
    cost = job_usage["estimated_cost"]
    assert cost["compute"] == pytest.approx(seconds)  # 3600 per hour
    assert cost["storage"] == pytest.approx(stored / 1e9 * 2)  # 730 per GB-month = 1 per GB-hour, kept 2 hours
    assert cost["egress"] == pytest.approx((size + 100) / 1e9)
    assert cost["total"] == pytest.approx(cost["compute"] + cost["storage"] + cost["egress"])
    assert _value(samples, "reelgen_usage_estimated_cost", component="compute") == pytest.approx(seconds)
    assert _value(samples, "reelgen_usage_compute_seconds", device="cpu") == pytest.approx(seconds)


def test_usage_sums_every_video_including_failed_and_cancelled(make_client, tmp_path):
    client = make_client(FakeGenerator(step_seconds=0.01))
    done = [_run(client, num_inference_steps=3, seed=seed) for seed in (1, 2)]
    client.get(f"/v1/videos/{done[0]['id']}/content")
    total = client.get("/v1/usage").json()
    videos = [client.get(f"/v1/videos/{v['id']}").json()["usage"] for v in done]
    assert total["object"] == "usage" and total["scope"] == "global" and total["videos"] == 2
    assert total["compute_seconds"]["cpu"] == pytest.approx(sum(v["compute_seconds"]["cpu"] for v in videos))
    for field in ("bytes_stored", "bytes_served"):
        assert total[field] == sum(v[field] for v in videos) > 0
    for component in ("compute", "storage", "egress", "total"):
        assert total["estimated_cost"][component] == pytest.approx(
            sum(v["estimated_cost"][component] for v in videos))

    # its own database: the first app's workers would otherwise claim this app's job and complete it
    failing = make_client(FakeGenerator(step_seconds=0.01, fail=RuntimeError("out of memory")),
                          data_dir=tmp_path / "failing")
    failed = _run(failing, num_inference_steps=3)
    assert failed["status"] == "failed"
    assert failed["usage"]["compute_seconds"]["cpu"] > 0 and failed["usage"]["bytes_stored"] == 0
    assert _value(_samples(failing), "reelgen_jobs_finished_total", status="failed") == 1


def test_a_cancelled_job_records_the_compute_it_used(make_client):
    generator = FakeGenerator(step_seconds=0.05)
    client = make_client(generator)
    video = client.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 200}).json()
    wait_until(lambda: generator.steps_run >= 3, timeout=30, message="a few steps")
    assert client.post(f"/v1/videos/{video['id']}/cancel").json()["status"] == "cancelled"
    wait_until(lambda: _value(_samples(client), "reelgen_jobs_finished_total", status="cancelled") == 1,
               timeout=30, message="the worker to stop")
    job_usage = client.get(f"/v1/videos/{video['id']}").json()["usage"]
    assert job_usage["compute_seconds"]["cpu"] >= 0.15 and job_usage["bytes_stored"] == 0


def test_queue_depth_and_age_come_from_the_store_so_every_process_agrees(store, clock, tmp_path):
    first, second = new_job(), new_job()
    store.add(first)
    clock.now += 30
    store.add(second)
    clock.now += 12
    other_process = JobStore(store.engine.url.render_as_string(), clock=clock)  # its own engine on the same database
    try:
        for collector in (StoreCollector(store, clock), StoreCollector(other_process, clock)):
            samples = {s.name: s.value for family in collector.collect() for s in family.samples
                       if not s.labels}
            assert samples["reelgen_queue_depth"] == 2
            assert samples["reelgen_queue_oldest_age_seconds"] == pytest.approx(42)
            assert samples["reelgen_store_up"] == 1
        store.claim("w")  # the oldest leaves the queue: the age is the younger one's
        samples = {s.name: s.value for family in StoreCollector(other_process, clock).collect()
                   for s in family.samples if not s.labels}
        assert samples["reelgen_queue_depth"] == 1 and samples["reelgen_queue_oldest_age_seconds"] == 12
    finally:
        other_process.close()


def test_a_store_that_does_not_answer_gives_up_zero_not_a_failed_scrape(tmp_path):
    path = tmp_path / "jobs.db"
    broken = JobStore(f"sqlite:///{path}")
    path.mkdir()  # a folder where the database file should be: SQLite cannot open it
    try:
        families = {family.name: family for family in ServiceMetrics(broken).registry.collect()}
        assert families["reelgen_store_up"].samples[0].value == 0
        assert "reelgen_queue_depth" not in families
    finally:
        broken.close()


def test_worker_utilization_counts_running_jobs_up_to_the_scrape():
    clock = FakeClock(0.0)
    workers = WorkerUtilization(workers=2, clock=clock)
    clock.now = 4.0
    with workers.busy():
        clock.now = 6.0
        assert workers.snapshot() == (2.0, 1, pytest.approx(2.0 / 12))
        clock.now = 7.0
    clock.now = 10.0
    assert workers.snapshot() == (3.0, 0, pytest.approx(3.0 / 20))


def test_job_usage_prices_by_device_kind():
    prices = usage.Prices({"cpu": 0.36, "cuda": 3.6}, storage_per_gb_month=7.3, egress_per_gb=0.5)
    on_gpu = usage.job_usage("cuda:1", 100.0, 2 * 10**9, 73.0, prices)
    assert on_gpu["device"] == "cuda"
    assert on_gpu["cost"] == {"compute": pytest.approx(0.1), "storage": pytest.approx(1.46)}
    assert usage.job_usage("xpu", 100.0, 0, 1.0, prices)["cost"]["compute"] == 0  # no price named: no cost
