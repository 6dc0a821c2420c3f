"""Liveness and readiness: /readyz answers 503 naming the part that broke, for real breakages of each part."""

from __future__ import annotations

import shutil

import pytest

from tests.service.helpers import FakeGenerator, wait_until


class BrokenWeights(FakeGenerator):
    def load(self) -> float:
        raise OSError("weights file truncated")


@pytest.fixture
def make_client(open_app):
    return lambda generator, **settings: open_app([generator], **settings)


def _finish(client, **body) -> dict:
    video = client.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 2, **body}).json()
    return wait_until(lambda: (v := client.get(f"/v1/videos/{video['id']}").json())["status"]
                      in ("completed", "failed") and v, timeout=60, message="the video to finish")


def test_ready_when_database_storage_and_a_model_are_usable(make_client):
    client = make_client(FakeGenerator())
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and set(body["checks"]) == {"database", "storage", "models"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["models"]["detail"] == "fake: not_loaded"  # loadable: weights come with the first job
    assert _finish(client)["status"] == "completed"
    assert client.get("/readyz").json()["checks"]["models"]["detail"] == "fake: loaded"
    # the probe object leaves nothing behind
    assert client.app.state.services.storage.children("_probes") == []


def test_unreachable_storage_is_not_ready(make_client, tmp_path):
    client = make_client(FakeGenerator(), storage_url=str(tmp_path / "files"))
    shutil.rmtree(tmp_path / "files")
    (tmp_path / "files").write_text("a file where the storage folder was")
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert not checks["storage"]["ok"] and checks["storage"]["detail"]
    assert checks["database"]["ok"] and checks["models"]["ok"]
    assert client.get("/healthz").status_code == 200  # alive all the same: a restart would not fix storage


def test_unreachable_database_is_not_ready(make_client, tmp_path):
    client = make_client(FakeGenerator(), storage_url=str(tmp_path / "files"))
    # A file where the database's folder was: SQLite cannot open the database, and no background thread
    # (workers, housekeeping, webhooks) can create it again behind the test's back.
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").write_text("not a folder")
    # Then drop pooled connections, so the next one opens the path anew. Dropped first, a background thread could
    # open one before the folder went, whose open file still answered (a 200 in a CI run).
    client.app.state.services.store.close()
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert not checks["database"]["ok"] and "unable to open database" in checks["database"]["detail"]
    assert response.json()["status"] == "not_ready"


def test_a_model_whose_load_failed_is_not_ready(make_client):
    client = make_client(BrokenWeights())
    assert client.get("/readyz").status_code == 200  # not tried yet: loadable
    assert _finish(client)["status"] == "failed"
    response = client.get("/readyz")
    assert response.status_code == 503
    models = response.json()["checks"]["models"]
    assert not models["ok"] and "every model failed to load" in models["detail"]


def test_probes_are_documented_and_metrics_is_not_in_the_openapi_document(make_client):
    paths = make_client(FakeGenerator()).get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/v1/usage"} <= set(paths)
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "/metrics" not in paths
