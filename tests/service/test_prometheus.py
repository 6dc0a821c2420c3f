"""A real Prometheus server (Debian's prometheus) scrapes a live `reelgen serve` and answers a query back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import httpx
import pytest

from tests.service.helpers import wait_until
from tests.service.live import Server

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """One prometheus process on loopback scraping `target` every second, with its data in a temp folder."""

    def __init__(self, root, target: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML: no YAML writer needed
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "reelgen", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = root / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> list[dict]:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        except httpx.TransportError:  # still starting
            return []
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def test_prometheus_scrapes_the_service_and_queries_a_counter_back(tmp_path, tiny_model_dir):
    assert PROMETHEUS, "needs Debian's prometheus package: apt-get install prometheus (.ci/run does)"
    server = Server(tmp_path / "server", tiny_model_dir)
    server.root.mkdir()
    server.start()
    prometheus = None
    try:
        with server.http() as http:
            video = http.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 2}).json()
            wait_until(lambda: http.get(f"/v1/videos/{video['id']}").json()["status"] == "completed",
                       timeout=120, interval=0.2, message="the video to complete")
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{server.port}")
        completed = 'reelgen_jobs_finished_total{job="reelgen",status="completed"}'
        result = wait_until(lambda: prometheus.query(completed), timeout=120, interval=0.5,
                            message="prometheus to scrape the jobs-completed counter")
        assert [float(series["value"][1]) for series in result] == [1.0]
        assert prometheus.query('up{job="reelgen"}')[0]["value"][1] == "1"
        states = {s["metric"]["state"]: float(s["value"][1]) for s in prometheus.query("reelgen_jobs")}
        assert states == {"queued": 0, "in_progress": 0, "completed": 1, "failed": 0, "cancelled": 0}
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
    # the server logged JSON (its stderr is a file, not a terminal), and its lines about the job carry the id
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert any(line.get("job_id") == video["id"] and line["message"].startswith("completed") for line in lines)
