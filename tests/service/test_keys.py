"""Tenants: API keys, ownership, Idempotency-Key, per-key limits and quotas, the body limit, `reelgen keys`."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import select

from reelgen.cli import main
from reelgen.service import usage
from reelgen.service.api.create import request_hash
from reelgen.service.api.schemas import VideoCreate
from reelgen.service.jobs import JobStore
from reelgen.service.tenants import (
    ApiKey,
    Idempotency,
    KeyStore,
    Limits,
    Refused,
    admit,
    count_request,
    is_loopback,
    sweep,
)
from reelgen.service.tenants.idempotency import ABANDONED_SECONDS, TTL_SECONDS
from reelgen.service.tenants.limits import DAY
from reelgen.service.webhooks import Outbox
from tests.service.helpers import FakeGenerator, new_job, wait_until

MIDNIGHT = 20_000 * DAY  # a UTC midnight (in 2024), for clocks that must not cross one by accident


# --- the store side, on SQLite and a real PostgreSQL ---


@pytest.fixture
def store(database_url, clock) -> JobStore:
    store = JobStore(database_url, clock=clock)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def keys(store, clock) -> KeyStore:
    return KeyStore(store.engine, clock)


def test_a_key_is_stored_as_a_hash_and_found_by_its_secret(keys, store):
    assert not keys.auth_required()
    key, secret = keys.create("ci", requests_per_minute=5)
    assert secret.startswith("rg_") and len(secret) > 40 and key.hint == secret[:7]
    assert keys.find(secret).id == key.id and keys.find(secret + "x") is None
    with store.engine.connect() as connection:
        row = connection.execute(select(ApiKey.__table__)).one()
    assert not any(secret in str(value) for value in row)  # the secret itself is nowhere in the database
    assert keys.auth_required()
    assert [k.name for k in keys.list()] == ["ci"] and keys.list()[0].requests_per_minute == 5


def test_revocation_is_immediate_and_keeps_auth_on(keys):
    key, secret = keys.create()
    assert keys.revoke(key.id).revoked_at is not None
    assert keys.find(secret).revoked_at is not None  # the next lookup sees it
    assert keys.revoke("key_missing") is None
    assert KeyStore(keys.engine).auth_required()  # a revoked key still counts as "a key was made"


def test_configured_secrets_become_keys_and_leave_as_revoked(keys):
    keys.register_configured(["one", "two"])
    keys.register_configured(["one", "two"])  # a restart: nothing new
    assert sorted(k.configured for k in keys.list()) == [True, True]
    keys.register_configured(["one"])
    assert keys.find("two").revoked_at is not None and keys.find("one").revoked_at is None
    keys.register_configured(["one", "two"])
    assert keys.find("two").revoked_at is not None  # listing a revoked secret again does not revive it


def test_requests_per_minute_count_in_fixed_windows(keys, clock):
    key, _ = keys.create()
    limits = Limits(requests_per_minute=3, max_concurrent_jobs=0, daily_compute_seconds=0)
    clock.now = MIDNIGHT + 15
    for _ in range(3):
        count_request(keys.engine, key, limits, clock.now)
    with pytest.raises(Refused) as refused:
        count_request(keys.engine, key, limits, clock.now)
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (429, "rate_limit_exceeded", 45)
    other, _ = keys.create()
    count_request(keys.engine, other, limits, clock.now)  # each key has its own count
    count_request(keys.engine, key, limits, MIDNIGHT + 60)  # the next minute starts over


def _add(store, key, limits):
    """Add a job of `key` the way the API does: admitted in the insert's transaction."""
    return store.add(new_job(owner=key.id), lambda session, _: admit(session, key, limits, store.clock()))


def test_concurrent_jobs_are_limited_per_key_and_a_refused_job_is_not_added(store, keys):
    key, _ = keys.create()
    limits = Limits(requests_per_minute=0, max_concurrent_jobs=2, daily_compute_seconds=0)
    first, _second = _add(store, key, limits), _add(store, key, limits)
    with pytest.raises(Refused) as refused:
        _add(store, key, limits)
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded") and refused.value.retry_after
    assert len(store.list(owner=key.id)[0]) == 2
    other, _ = keys.create()
    _add(store, other, limits)  # another key's jobs are not counted
    store.cancel(first.id)
    _add(store, key, limits)  # a finished job frees its slot


def test_racing_creates_of_one_key_never_exceed_its_concurrency_limit(store, keys):
    key, _ = keys.create()
    limits = Limits(requests_per_minute=0, max_concurrent_jobs=3, daily_compute_seconds=0)
    outcomes, start = [], threading.Barrier(8)

    def create() -> None:
        start.wait()
        try:
            _add(store, key, limits)
            outcomes.append("added")
        except Refused:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] * 3 + ["refused"] * 5
    assert len(store.list(owner=key.id)[0]) == 3


def test_compute_is_charged_to_the_day_and_deleting_videos_gives_none_back(store, keys, clock):
    key, _ = keys.create()
    limits = Limits(requests_per_minute=0, max_concurrent_jobs=0, daily_compute_seconds=10)
    clock.now = MIDNIGHT + 3600
    job = _add(store, key, limits)
    claimed = store.claim("w")
    assert usage.record(store, job.id, claimed.lease_token, {"compute_seconds": 12.5})
    store.delete(job.id)
    with pytest.raises(Refused) as refused:
        _add(store, key, limits)
    assert (refused.value.status, refused.value.code) == (429, "insufficient_quota")
    assert refused.value.retry_after == DAY - 3600  # until the next UTC midnight
    clock.now = MIDNIGHT + DAY
    _add(store, key, limits)  # a new day, a new quota


def test_idempotency_key_replays_refuses_and_expires(store, clock):
    idempotency = Idempotency(store.engine, clock)
    assert idempotency.claim("key_a", "k1", "hash1") is None
    with pytest.raises(Refused) as in_flight:
        idempotency.claim("key_a", "k1", "hash1")
    assert in_flight.value.status == 409
    with pytest.raises(Refused) as reused:
        idempotency.claim("key_a", "k1", "hash2")
    assert reused.value.status == 422
    assert idempotency.claim("key_b", "k1", "hash2") is None  # keys belong to one API key
    store.add(new_job(), lambda session, job: Idempotency.complete(session, "key_a", "k1", job.id, {"id": job.id}))
    replay = idempotency.claim("key_a", "k1", "hash1")
    assert replay["id"].startswith("video_")
    clock.now += TTL_SECONDS + 1
    assert idempotency.claim("key_a", "k1", "hash2") is None  # expired: the key is free for a new request


def test_a_failed_or_abandoned_request_frees_its_idempotency_key(store, clock):
    idempotency = Idempotency(store.engine, clock)
    idempotency.claim("", "k", "h")
    idempotency.release("", "k")
    assert idempotency.claim("", "k", "h") is None
    clock.now += ABANDONED_SECONDS + 1  # its process died mid-request
    assert idempotency.claim("", "k", "h") is None


def test_racing_requests_with_one_idempotency_key_get_one_claim(store):
    idempotency, won, start = Idempotency(store.engine), [], threading.Barrier(6)

    def claim() -> None:
        start.wait()
        try:
            won.append(idempotency.claim("key_a", "same", "h") is None)
        except Refused as e:
            won.append(e.status)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won, key=str) == [409] * 5 + [True]


def test_housekeeping_drops_ended_windows_and_expired_records(store, keys, clock):
    key, _ = keys.create()
    count_request(keys.engine, key, Limits(5, 0, 0), clock.now)
    Idempotency(store.engine, clock).claim("key_a", "k", "h")
    sweep(store.engine, clock.now + DAY + 61)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM api_key_counters").scalar() == 0
        assert connection.exec_driver_sql("SELECT count(*) FROM idempotency_keys").scalar() == 0


def test_only_loopback_addresses_count_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")


# --- the API, in-process over a fake generator ---


@pytest.fixture
def make_client(open_app):
    return lambda generator=None, **settings: open_app([generator or FakeGenerator()], **settings)


def _keys(client) -> KeyStore:
    return client.app.state.services.keys


def _as(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _create(client, secret: str | None, **body):
    return client.post("/v1/videos", json={"prompt": "a red circle", **body},
                       headers=_as(secret) if secret else {})


def _finished(client, secret, video_id) -> dict:
    return wait_until(lambda: (v := client.get(f"/v1/videos/{video_id}", headers=_as(secret)).json())["status"]
                      in ("completed", "failed", "cancelled") and v, timeout=30)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def test_without_keys_auth_is_off_and_says_so(make_client, caplog):
    with caplog.at_level(logging.WARNING):
        client = make_client()
    assert "auth is off" in caplog.text
    assert _create(client, None).status_code == 200
    assert _create(client, "anything").status_code == 200  # the openai SDK always sends a key
    assert client.get("/v1/usage").json()["scope"] == "global"


def test_each_key_sees_and_touches_only_its_own_videos(make_client):
    client = make_client()
    (key_a, a), (_, b) = _keys(client).create("a"), _keys(client).create("b")
    _error(_create(client, None), 401, "invalid_api_key")
    _error(client.get("/v1/models", headers=_as("rg_wrong")), 401, "invalid_api_key")
    video = _create(client, a).json()
    assert _finished(client, a, video["id"])["status"] == "completed"
    base = f"/v1/videos/{video['id']}"
    for method, path, body in [("GET", "", None), ("GET", "/content", None), ("GET", "/events", None),
                               ("POST", "/remix", {"prompt": "x"}), ("POST", "/cancel", None),
                               ("POST", "/link", {"variant": "video", "expires_in": 60}), ("DELETE", "", None)]:
        _error(client.request(method, base + path, json=body, headers=_as(b)), 404, "video_not_found")
    assert client.get("/v1/videos", headers=_as(b)).json()["data"] == []
    _error(client.get("/v1/videos", params={"after": video["id"]}, headers=_as(b)), 404, "video_not_found")
    assert [v["id"] for v in client.get("/v1/videos", headers=_as(a)).json()["data"]] == [video["id"]]
    assert client.get(base + "/content", headers=_as(a)).status_code == 200
    link = client.post(base + "/link", json={"variant": "video", "expires_in": 60}, headers=_as(a)).json()
    assert client.get(link["url"]).status_code == 200  # a signed link needs no key
    own, other = (client.get("/v1/usage", headers=_as(s)).json() for s in (a, b))
    assert (own["scope"], own["videos"], other["videos"]) == (key_a.id, 1, 0)
    remix = client.post(base + "/remix", json={"prompt": "again"}, headers=_as(a))
    assert remix.status_code == 200 and client.get(f"/v1/videos/{remix.json()['id']}", headers=_as(a)).status_code == 200
    assert client.delete(base, headers=_as(a)).status_code == 200


def test_a_revoked_key_is_refused_at_its_next_request(make_client):
    client = make_client()
    key, secret = _keys(client).create()
    assert client.get("/v1/videos", headers=_as(secret)).status_code == 200
    _keys(client).revoke(key.id)
    assert "revoked" in _error(client.get("/v1/videos", headers=_as(secret)), 401, "invalid_api_key")["message"]


def test_idempotency_key_on_create(make_client):
    client = make_client()
    (_, a), (_, b) = _keys(client).create(), _keys(client).create()
    headers = {**_as(a), "Idempotency-Key": "order-1"}
    first = client.post("/v1/videos", json={"prompt": "a ball", "seed": 1}, headers=headers)
    again = client.post("/v1/videos", json={"prompt": "a ball", "seed": 1}, headers=headers)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    as_form = client.post("/v1/videos", data={"prompt": "a ball", "seed": "1"}, headers=headers)
    assert as_form.json()["id"] == first.json()["id"]  # the same request, sent as the openai SDK sends it
    _error(client.post("/v1/videos", json={"prompt": "a cube", "seed": 1}, headers=headers), 422,
           "idempotency_key_reused")
    other = client.post("/v1/videos", json={"prompt": "a ball", "seed": 1},
                        headers={**_as(b), "Idempotency-Key": "order-1"})
    assert other.json()["id"] != first.json()["id"]  # another API key's namespace
    assert len(client.get("/v1/videos", headers=_as(a)).json()["data"]) == 1
    # a retry while the first request is still running gets a 409 (the claim that request would make, made here)
    client.app.state.services.idempotency.claim(_keys(client).find(a).id, "order-2",
                                                request_hash(VideoCreate(prompt="a ball")))
    _error(client.post("/v1/videos", json={"prompt": "a ball"}, headers={**_as(a), "Idempotency-Key": "order-2"}),
           409, "idempotency_key_in_use")
    # a refused request leaves its key free to retry
    _error(client.post("/v1/videos", json={"prompt": "x", "size": "9x9"}, headers={**_as(a), "Idempotency-Key": "o3"}),
           400, "unsupported_value")
    assert client.post("/v1/videos", json={"prompt": "x"}, headers={**_as(a), "Idempotency-Key": "o3"}).status_code == 200


def test_requests_over_the_keys_rate_get_429_with_retry_after(make_client):
    client = make_client(requests_per_minute=2)
    _, secret = _keys(client).create()
    _, roomy = _keys(client).create(requests_per_minute=100)
    assert [client.get("/v1/models", headers=_as(secret)).status_code for _ in range(2)] == [200, 200]
    refused = client.get("/v1/models", headers=_as(secret))
    assert _error(refused, 429, "rate_limit_exceeded")["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert [client.get("/v1/models", headers=_as(roomy)).status_code for _ in range(3)] == [200] * 3


def test_concurrent_jobs_and_daily_compute_per_key(make_client):
    client = make_client(FakeGenerator(step_seconds=0.05), max_concurrent_jobs=1)
    _, secret = _keys(client).create()
    running = _create(client, secret, num_inference_steps=200).json()
    refused = _create(client, secret)
    _error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) > 0
    assert client.post(f"/v1/videos/{running['id']}/cancel", headers=_as(secret)).status_code == 200
    _, frugal = _keys(client).create(daily_compute_seconds=0.001)
    video = _create(client, frugal).json()
    assert _finished(client, frugal, video["id"])["status"] == "completed"
    quota = _create(client, frugal)
    _error(quota, 429, "insufficient_quota")
    assert 1 <= int(quota.headers["retry-after"]) <= DAY
    assert client.delete(f"/v1/videos/{video['id']}", headers=_as(frugal)).status_code == 200
    _error(_create(client, frugal), 429, "insufficient_quota")  # deleting a video gives no compute back
    used = client.get("/v1/usage", headers=_as(frugal)).json()
    assert used["videos"] == 0 and used["compute_seconds_today"] > 0.001
    assert used["limits"] == {"requests_per_minute": 600, "max_concurrent_jobs": 1, "daily_compute_seconds": 0.001}


def test_a_keys_webhook_url_is_used_unless_the_request_names_one(make_client):
    client = make_client(webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", webhook_allow_hosts="127.0.0.1")
    _, secret = _keys(client).create(webhook_url="https://hooks.example.com/reelgen")
    outbox = Outbox(client.app.state.services.store.engine)
    by_key = _create(client, secret).json()
    assert [(d.url, d.source) for d in outbox.for_job(by_key["id"])] == [("https://hooks.example.com/reelgen", "key")]
    by_request = _create(client, secret, webhook_url="http://127.0.0.1:9/mine").json()
    assert [d.url for d in outbox.for_job(by_request["id"])] == ["http://127.0.0.1:9/mine"]


def test_a_chunked_multipart_body_over_the_limit_gets_413(make_client):
    client = make_client(max_upload_bytes=1000)
    boundary = "b0undary"

    def chunks():  # no Content-Length: httpx sends an iterator chunked
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
        for _ in range(50):
            yield b"x" * 100
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/videos", content=chunks(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "1000 bytes" in _error(response, 413, "request_too_large")["message"]
    assert client.get("/v1/videos").json()["data"] == []


def test_the_openapi_document_declares_bearer_auth_and_the_idempotency_header(make_client):
    doc = make_client().get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = doc["paths"]["/v1/videos"]["post"]
    assert {"HTTPBearer": []} in create["security"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert {"409", "413", "422", "429"} <= set(create["responses"])


# --- `reelgen keys` and `reelgen serve` ---


def test_keys_cli_shows_a_secret_once_and_revokes_at_once(make_client, make_settings, capsys):
    client = make_client()
    url = client.app.state.services.settings.database_url
    assert main(["keys", "create", "--database-url", url, "--name", "ci", "--requests-per-minute", "30"]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("rg_") and "shown only this once" in err
    assert client.get("/v1/videos").status_code == 401  # the running service sees the new key at once
    assert client.get("/v1/videos", headers=_as(secret)).status_code == 200
    assert main(["keys", "list", "--database-url", url]) == 0
    listed = capsys.readouterr().out
    key_id = listed.split()[0]
    assert "ci" in listed and "rpm 30" in listed and secret not in listed and secret[:7] in listed
    assert main(["keys", "revoke", "--database-url", url, key_id]) == 0
    assert client.get("/v1/videos", headers=_as(secret)).status_code == 401
    assert main(["keys", "revoke", "--database-url", url, "key_nope"]) == 2
    assert "no API key has the id 'key_nope'" in capsys.readouterr().err
    assert main(["keys", "create", "--database-url", url, "--max-concurrent-jobs", "-1"]) == 2
    assert main(["keys", "create", "--database-url", url, "--webhook-url", "ftp://x"]) == 2
    assert "--webhook-url" in capsys.readouterr().err


def test_serve_refuses_a_public_address_without_keys(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", data]) == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in capsys.readouterr().err


def test_the_keys_cli_names_an_unreachable_database(capsys):
    assert main(["keys", "list", "--database-url", "postgresql+psycopg://reelgen@127.0.0.1:1/reelgen"]) == 2
    assert "cannot reach the database" in capsys.readouterr().err


def test_videos_made_while_auth_was_off_belong_to_no_key(store, keys):
    old = store.add(new_job())
    key, _ = keys.create()
    assert store.list(owner=key.id)[0] == [] and [job.id for job in store.list()[0]] == [old.id]
