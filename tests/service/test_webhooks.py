"""Webhooks: Standard Webhooks signatures, SSRF checks, the backoff schedule, the outbox, and deliveries from an
in-process app and from a live `reelgen serve` (slow) to a real receiver on loopback that verifies them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook

from reelgen.service.app import create_app
from reelgen.service.jobs import JobStore
from reelgen.service.webhooks import Outbox, Subscription, WebhookDelivery, WebhookSender, retry_delay
from reelgen.service.webhooks.signing import check_secret, signed_headers
from reelgen.service.webhooks.ssrf import AllowList, BlockedURL, check_url
from tests.service.helpers import FakeGenerator, new_job, wait_until

SECRET = "whsec_" + base64.b64encode(b"reelgen-webhooks-test-secret-32b").decode()


# --- signing ---

def test_signature_matches_the_standard_webhooks_test_vector():
    # the vector the Standard Webhooks reference libraries test against
    headers = signed_headers("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                             '{"test": 2432232314}')
    assert headers == {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                       "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


@pytest.mark.parametrize("secret", ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_short", "whsec_not base64!!"])
def test_malformed_secrets_are_refused(secret):
    with pytest.raises(ValueError, match="whsec_"):
        check_secret(secret)


def test_a_malformed_service_secret_stops_the_app_at_creation(make_settings):
    with pytest.raises(ValueError, match="whsec_"):
        create_app(make_settings(webhook_secret="hunter2"), [FakeGenerator()])
    with pytest.raises(ValueError, match="REELGEN_WEBHOOK_SECRET"):
        create_app(make_settings(webhook_url="https://hooks.example.com/x"), [FakeGenerator()])


# --- SSRF ---

@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1/", "loopback"), ("http://[::1]:8080/", "loopback"), ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://10.1.2.3/", "private"), ("http://172.16.0.1/", "private"), ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"), ("http://[fd12:3456::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://[fe80::1]/", "link-local"),
    ("http://0.0.0.0/", "unspecified"), ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"), ("http://[ff02::1]/", "multicast"),
    ("http://100.64.0.1/", "non-public"),  # carrier-grade NAT: not private, not public either
])
def test_non_public_addresses_are_blocked(url, kind):
    with pytest.raises(BlockedURL, match=f" {kind} address"):
        check_url(url, AllowList())


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/", "only http and https"), ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"), ("http:///path", "no host"),
    ("http://user:pw@example.com/", "credentials"), ("http://example.com:99999/", "not a valid URL"),
])
def test_only_plain_http_urls_are_accepted(url, reason):
    with pytest.raises(BlockedURL, match=reason):
        check_url(url, AllowList(), resolver=lambda host, port: ["93.184.216.34"])


def test_host_names_are_checked_by_every_address_they_resolve_to():
    with pytest.raises(BlockedURL, match="loopback"):
        check_url("http://localhost:8000/hook", AllowList())  # the real resolver: /etc/hosts
    # a DNS answer mixing a public and a private address is refused: the connection could go to either
    with pytest.raises(BlockedURL, match="10.0.0.7"):
        check_url("https://hooks.example.com/", AllowList(), resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    target = check_url("https://hooks.example.com/x", AllowList(), resolver=lambda host, port: ["93.184.216.34"])
    assert (target.host, target.port, target.address) == ("hooks.example.com", 443, "93.184.216.34")


def test_the_allow_list_admits_networks_and_host_names():
    allow = AllowList.parse(["127.0.0.1/32", "10.0.0.0/8", "Internal.Example.COM"])
    assert check_url("http://127.0.0.1:9000/", allow).address == "127.0.0.1"
    assert check_url("http://10.200.0.1/", allow).address == "10.200.0.1"
    assert check_url("http://internal.example.com/", allow, resolver=lambda h, p: ["192.168.7.7"]).address \
        == "192.168.7.7"
    with pytest.raises(BlockedURL, match="127.0.0.2"):
        check_url("http://127.0.0.2/", allow)
    with pytest.raises(BlockedURL, match="169.254.169.254"):
        check_url("http://169.254.169.254/", allow)
    with pytest.raises(ValueError, match="neither a CIDR"):
        AllowList.parse(["10.0.0.0/33"])


# --- backoff ---

def test_backoff_grows_3x_per_attempt_with_bounded_jitter():
    assert [retry_delay(n, 60, rng=lambda: 0.5) for n in range(1, 8)] == [60, 180, 540, 1620, 4860, 14580, 43740]
    assert retry_delay(2, 60, rng=lambda: 0.0) == pytest.approx(180 * 0.8)
    assert retry_delay(2, 60, rng=lambda: 1.0) == pytest.approx(180 * 1.2)
    # the default 8 attempts span about a day: the 7 gaps sum to 18.2 h at the middle of the jitter
    assert sum(retry_delay(n, 60, rng=lambda: 0.5) for n in range(1, 8)) / 3600 == pytest.approx(18.2, abs=0.1)


# --- the outbox ---

def _finish(store: JobStore, job_id: str) -> None:
    job = store.claim("worker")
    assert job.id == job_id and store.complete(job.id, job.lease_token, {})


def test_an_event_is_fixed_once_and_claimed_by_one_process_at_a_time(store, clock):
    first, second = Outbox(store.engine, clock), Outbox(store.engine, clock)
    job = new_job(id="video_a")
    first.subscribe(job.id, Subscription("https://hooks.example.com/x", "request"))
    store.add(job)
    assert first.promote(lambda job: {"id": job.id}) == 0  # still queued: nothing to say yet
    _finish(store, job.id)
    # two processes look at once: one fixes the event, the other's update matches nothing
    assert first.promote(lambda job: {"id": job.id}) + second.promote(lambda job: {"id": job.id}) == 1
    [row] = first.for_job(job.id)
    assert row.status == "pending" and row.event == "video.completed"
    assert json.loads(row.payload) == {"type": "video.completed", "timestamp": "1970-01-12T13:46:40Z",
                                       "data": {"id": "video_a"}}

    claimed = first.claim(lease_seconds=30)
    assert claimed.attempts == 1 and second.claim(lease_seconds=30) is None
    # the first process dies mid-send: once its lease ends the second takes the row, and the first's late
    # result no longer counts
    clock.now += 31
    retaken = second.claim(lease_seconds=30)
    assert retaken.id == claimed.id and retaken.attempts == 2
    assert not first.record(claimed, ok=True, status_code=200, error=None, retry_at=None)
    assert second.record(retaken, ok=False, status_code=500, error="HTTP 500", retry_at=clock.now + 5)
    assert first.claim(lease_seconds=30) is None  # not due yet
    clock.now += 5
    again = first.claim(lease_seconds=30)
    assert first.record(again, ok=True, status_code=200, error=None, retry_at=None)
    [row] = first.for_job(job.id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 3, 200, None)


def test_rows_of_videos_that_never_existed_or_were_deleted_are_swept(store, clock):
    outbox = Outbox(store.engine, clock)
    outbox.subscribe("video_never_added", Subscription("https://hooks.example.com/x", "service"))
    kept = store.add(new_job())
    outbox.subscribe(kept.id, Subscription("https://hooks.example.com/x", "service"))
    assert outbox.sweep_orphans() == 0  # young: its create may still be under way
    clock.now += 601
    assert outbox.sweep_orphans() == 1
    assert outbox.for_job("video_never_added") == [] and len(outbox.for_job(kept.id)) == 1


# --- a receiver on loopback ---

class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers each path from a script."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.calls: list[dict] = []
        self.scripts: dict[str, list[int]] = {}  # path -> statuses to answer in turn; 200 once used up
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    script = receiver.scripts.get(self.path, [])
                    status = script.pop(0) if len(script) > 1 else (script[0] if script else 200)
                    receiver.calls.append({"path": self.path, "body": body, "status": status,
                                           "headers": {k.lower(): v for k, v in self.headers.items()}})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [call for call in self.calls if call["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def verified(call: dict) -> dict:
    """The event of a received call, after checking its signature twice: with the reference package, and by hand."""
    event = Webhook(SECRET).verify(call["body"], call["headers"])
    headers = call["headers"]
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + call["body"]
    assert headers["webhook-signature"] == "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) \
        .decode()
    assert headers["content-type"] == "application/json" and headers["webhook-id"].startswith("msg_")
    return event


def test_each_attempt_resolves_again_and_connects_to_the_address_it_checked(store, make_settings, receiver):
    """A host that passed at create and then resolves to a private address (DNS rebinding) is not called."""
    answers = {"hooks.test": ["127.0.0.1"]}  # allow-listed by address below, as a receiver on loopback must be
    settings = make_settings(webhook_secret=SECRET, webhook_allow_hosts=["127.0.0.1/32"], webhook_max_attempts=2)
    outbox = Outbox(store.engine)
    sender = WebhookSender(outbox, settings, render=lambda job: {"id": job.id},
                           resolver=lambda host, port: answers[host])
    try:
        url = f"http://hooks.test:{receiver.server.server_port}/rebind"
        job = new_job(id="video_rebind")
        outbox.subscribe(job.id, Subscription(url, "request"))
        store.add(job)
        _finish(store, job.id)
        answers["hooks.test"] = ["10.0.0.7"]  # the name now points inside the network
        assert sender.run_once() == 1
        [row] = outbox.for_job(job.id)
        assert row.status == "pending" and "10.0.0.7, a private address" in row.last_error
        assert receiver.to("/rebind") == []

        answers["hooks.test"] = ["127.0.0.1"]
        with store.engine.begin() as connection:  # due now rather than after the backoff
            connection.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(next_attempt_at=0))
        assert sender.run_once() == 1
        [call] = receiver.to("/rebind")
        # the socket went to the checked address; the request still names the host of the URL
        assert call["headers"]["host"] == f"hooks.test:{receiver.server.server_port}"
        assert verified(call)["data"] == {"id": "video_rebind"}
        assert outbox.for_job(job.id)[0].status == "delivered"
    finally:
        sender.stop()


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_of_the_name(store, make_settings,
                                                                                        tmp_path, monkeypatch):
    # a receiver with a certificate for hooks.test only, trusted through SSL_CERT_FILE as a private CA would be
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.test",
                    "-addext", "subjectAltName=DNS:hooks.test", "-keyout", tmp_path / "key.pem",
                    "-out", tmp_path / "cert.pem"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    receiver = Receiver(tls)
    settings = make_settings(webhook_secret=SECRET, webhook_allow_hosts=["127.0.0.1/32"], webhook_max_attempts=1)
    outbox = Outbox(store.engine)
    sender = WebhookSender(outbox, settings, render=lambda job: {"id": job.id},
                           resolver=lambda host, port: ["127.0.0.1"])  # both names point at the receiver
    try:
        for job_id, host in [("video_right_name", "hooks.test"), ("video_wrong_name", "other.test")]:
            outbox.subscribe(job_id, Subscription(f"https://{host}:{receiver.server.server_port}/tls", "service"))
            store.add(new_job(id=job_id))
            _finish(store, job_id)
        assert sender.run_once() == 2
        [call] = receiver.to("/tls")
        assert verified(call)["data"] == {"id": "video_right_name"}
        assert call["headers"]["host"] == f"hooks.test:{receiver.server.server_port}"
        assert outbox.for_job("video_right_name")[0].status == "delivered"
        # the same address under a name the certificate does not carry: TLS checks the name, not the address
        [wrong] = outbox.for_job("video_wrong_name")
        assert wrong.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in wrong.last_error
    finally:
        sender.stop()
        receiver.close()


# --- in-process: the API's checks and the service-wide target ---

@pytest.fixture
def app_client(make_settings, receiver):
    clients = []

    def make(generator, **settings) -> TestClient:
        client = TestClient(create_app(make_settings(**settings), [generator])).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(("url", "message"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local address"),
    ("http://10.0.0.1/hook", "private address"),
    ("ftp://example.com/hook", "only http and https"),
])
def test_create_refuses_a_webhook_url_it_must_not_call(app_client, url, message):
    client = app_client(FakeGenerator(), webhook_secret=SECRET, webhook_allow_hosts=["127.0.0.1"])
    response = client.post("/v1/videos", json={"prompt": "a red circle", "webhook_url": url})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == ("webhook_url", "invalid_webhook_url",
                                                              "invalid_request_error")
    assert message in error["message"]
    assert client.get("/v1/videos").json()["data"] == []  # nothing was queued


def test_create_refuses_a_webhook_url_when_nothing_can_sign_it(app_client, receiver):
    client = app_client(FakeGenerator())
    response = client.post("/v1/videos", json={"prompt": "a red circle", "webhook_url": receiver.url("/x")})
    assert response.status_code == 400 and "REELGEN_WEBHOOK_SECRET" in response.json()["error"]["message"]


def test_the_service_webhook_gets_video_failed_with_the_video_as_the_api_returns_it(app_client, receiver):
    client = app_client(FakeGenerator(fail=RuntimeError("out of memory")), webhook_secret=SECRET,
                        webhook_url=receiver.url("/service"), webhook_allow_hosts=["127.0.0.1/32"],
                        webhook_poll_seconds=0.05)
    video = client.post("/v1/videos", json={"prompt": "a red circle"}).json()
    [call] = wait_until(lambda: receiver.to("/service"), timeout=30, message="the service webhook")
    event = verified(call)
    assert event["type"] == "video.failed" and event["timestamp"].endswith("Z")
    assert event["data"] == client.get(f"/v1/videos/{video['id']}").json()
    assert event["data"]["error"]["message"] == "RuntimeError: out of memory"
    metrics = client.get("/metrics").text
    assert 'reelgen_webhook_deliveries_total{event="video.failed",outcome="delivered"} 1.0' in metrics


def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_configured_attempts(app_client, receiver):
    receiver.scripts["/broken"] = [503]  # for good
    client = app_client(FakeGenerator(), webhook_secret=SECRET, webhook_allow_hosts=["127.0.0.1"],
                        webhook_max_attempts=3, webhook_backoff_seconds=0.05, webhook_poll_seconds=0.05)
    video = client.post("/v1/videos", json={"prompt": "a red circle", "webhook_url": receiver.url("/broken")}).json()
    outbox = Outbox(client.app.state.services.store.engine)
    wait_until(lambda: outbox.for_job(video["id"])[0].status == "failed", timeout=30, message="giving up")
    [row] = outbox.for_job(video["id"])
    assert (row.attempts, row.last_status_code, row.last_error) == (3, 503, "HTTP 503")
    calls = receiver.to("/broken")
    assert len(calls) == 3 and len({call["headers"]["webhook-id"] for call in calls}) == 1
    metrics = client.get("/metrics").text
    assert 'reelgen_webhook_deliveries_total{event="video.completed",outcome="retrying"} 2.0' in metrics
    assert 'reelgen_webhook_deliveries_total{event="video.completed",outcome="failed"} 1.0' in metrics


# --- a live `reelgen serve` (slow) ---

FAST = {"num_inference_steps": 2}
LONG = {"num_inference_steps": 200}  # seconds long on the slow model: time to cancel it mid-run


@pytest.fixture(scope="module")
def server(tmp_path_factory, slow_model_dir):
    from tests.service.live import Server

    with pytest.MonkeyPatch.context() as env:  # Server passes the environment on, to every (re)start
        env.setenv("REELGEN_WEBHOOK_SECRET", SECRET)
        env.setenv("REELGEN_WEBHOOK_ALLOW_HOSTS", "127.0.0.1/32")
        env.setenv("REELGEN_WEBHOOK_BACKOFF_SECONDS", "0.2")  # retries after 0.2 s, 0.6 s, 1.8 s, ...
        env.setenv("REELGEN_WEBHOOK_TIMEOUT_SECONDS", "2")
        env.setenv("REELGEN_WEBHOOK_POLL_SECONDS", "0.1")
        server = Server(tmp_path_factory.mktemp("webhooks"), slow_model_dir).start()
        yield server
        server.stop()


def _create(server, receiver, path: str, extra: dict) -> dict:
    response = server.http().post("/v1/videos", json={"prompt": "a red circle", "webhook_url": receiver.url(path),
                                                      **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_live_a_completed_video_delivers_a_verified_video_completed(server, receiver):
    video = _create(server, receiver, "/completed", FAST)
    [call] = wait_until(lambda: receiver.to("/completed"), timeout=240, message="video.completed")
    event = verified(call)
    assert event["type"] == "video.completed"
    assert event["data"] == server.http().get(f"/v1/videos/{video['id']}").json()
    assert event["data"]["status"] == "completed"


@pytest.mark.slow
def test_live_a_cancelled_video_delivers_video_cancelled(server, receiver):
    http = server.http()
    video = _create(server, receiver, "/cancelled", LONG)
    wait_until(lambda: http.get(f"/v1/videos/{video['id']}").json()["progress"] > 0, timeout=240,
               message="denoising to start")
    assert http.post(f"/v1/videos/{video['id']}/cancel").json()["status"] == "cancelled"
    [call] = wait_until(lambda: receiver.to("/cancelled"), timeout=60, message="video.cancelled")
    event = verified(call)
    assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("video.cancelled", video["id"],
                                                                            "cancelled")


@pytest.mark.slow
def test_live_a_receiver_failing_twice_gets_the_event_on_the_third_attempt(server, receiver):
    receiver.scripts["/flaky"] = [500, 500, 200]
    video = _create(server, receiver, "/flaky", FAST)
    calls = wait_until(lambda: (calls := receiver.to("/flaky")) and calls[-1]["status"] == 200 and calls,
                       timeout=240, message="a 200 from the flaky receiver")
    assert [call["status"] for call in calls] == [500, 500, 200]
    assert len({call["headers"]["webhook-id"] for call in calls}) == 1  # one message, retried
    assert all(verified(call)["data"]["id"] == video["id"] for call in calls)
    store = JobStore(f"sqlite:///{server.root / 'data' / 'jobs.db'}")
    try:
        [row] = Outbox(store.engine).for_job(video["id"])
        assert (row.status, row.attempts, row.last_status_code) == ("delivered", 3, 200)
    finally:
        store.close()


@pytest.mark.slow
def test_live_a_delivery_pending_at_sigkill_is_delivered_after_restart(server, receiver):
    receiver.scripts["/down"] = [503]  # down until the test says otherwise
    video = _create(server, receiver, "/down", FAST)
    wait_until(lambda: receiver.to("/down"), timeout=240, message="a first attempt")
    assert server.signal(signal.SIGKILL) == -signal.SIGKILL
    refused = len(receiver.to("/down"))
    with receiver.lock:
        receiver.scripts["/down"] = [200]
    server.start()  # same data folder: the outbox row is all that remembers the event
    calls = wait_until(lambda: (calls := receiver.to("/down")) and calls[-1]["status"] == 200 and calls,
                       timeout=120, message="the delivery after the restart")
    assert len(calls) == refused + 1 and len({call["headers"]["webhook-id"] for call in calls}) == 1
    assert verified(calls[-1])["type"] == "video.completed" and verified(calls[-1])["data"]["id"] == video["id"]

