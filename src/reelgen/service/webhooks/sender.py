"""The sender thread: fixes events of finished videos, then delivers due ones with retries and backoff."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import httpx

from reelgen.service.jobs import Job
from reelgen.service.settings import ServiceSettings
from reelgen.service.webhooks.models import WebhookDelivery
from reelgen.service.webhooks.outbox import Outbox
from reelgen.service.webhooks.signing import signed_headers
from reelgen.service.webhooks.ssrf import AllowList, BlockedURL, Resolver, check_url, resolve
from reelgen.service.webhooks.targets import secret_for

log = logging.getLogger(__name__)

BACKOFF_FACTOR = 3  # with the default 60 s first delay, 8 attempts span about 18 hours
JITTER = 0.2  # +-20%: receivers that came back together are not hit again in lockstep
_SWEEP_SECONDS = 60.0  # orphaned rows are rare (a video deleted before it finished): looked for once a minute


def retry_delay(attempt: int, base_seconds: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds after failed attempt number `attempt` (1-based) before the next one: exponential, jittered."""
    return base_seconds * BACKOFF_FACTOR ** (attempt - 1) * (1 - JITTER + 2 * JITTER * rng())


class WebhookSender:
    def __init__(self, outbox: Outbox, settings: ServiceSettings, render: Callable[[Job], dict], *,
                 on_attempt: Callable[[str, str], None] = lambda event, outcome: None,
                 resolver: Resolver = resolve, rng: Callable[[], float] = random.random):
        self.outbox, self.settings, self.render = outbox, settings, render
        self.on_attempt, self.resolver, self.rng = on_attempt, resolver, rng
        self.allow = AllowList.parse(settings.webhook_allow_hosts)
        # a claim outlives a whole attempt (DNS, connect, the receiver's answer) with room to spare
        self.lease_seconds = 3 * settings.webhook_timeout_seconds
        # No proxies from the environment: a proxy would connect to the name, not the address checked here. CA
        # bundles from it still count (SSL_CERT_FILE / SSL_CERT_DIR), for receivers behind a private CA.
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False,
                                  verify=httpx.create_ssl_context(trust_env=True))
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reelgen-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._http.close()

    def run_once(self, max_attempts: int = 100) -> int:
        """One round: fix due events, drop orphans, make up to `max_attempts` attempts -> attempts made."""
        self.outbox.promote(self.render)
        if time.monotonic() >= self._next_sweep:  # a write: not every poll, SQLite has one writer at a time
            self.outbox.sweep_orphans()
            self._next_sweep = time.monotonic() + _SWEEP_SECONDS
        made = 0
        while made < max_attempts and not self._stop.is_set():
            delivery = self.outbox.claim(self.lease_seconds)
            if delivery is None:
                break
            self.attempt(delivery)
            made += 1
        return made

    def attempt(self, delivery: WebhookDelivery) -> None:
        status_code, error = None, None
        try:
            target = check_url(delivery.url, self.allow, self.resolver)  # DNS now, not as it was at create
            status_code = self._post(delivery, target.host, target.address)
            if not 200 <= status_code < 300:  # a redirect too: it is not followed
                error = f"HTTP {status_code}"
        except BlockedURL as e:
            error = f"blocked: {e}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
        ok = error is None
        retry_at = None
        if not ok and delivery.attempts < self.settings.webhook_max_attempts:
            retry_at = self.outbox.clock() + retry_delay(delivery.attempts, self.settings.webhook_backoff_seconds,
                                                         self.rng)
        outcome = "delivered" if ok else "retrying" if retry_at is not None else "failed"
        if not self.outbox.record(delivery, ok=ok, status_code=status_code, error=error, retry_at=retry_at):
            log.warning("webhook %s: the claim lapsed before attempt %d finished", delivery.id, delivery.attempts)
        self.on_attempt(delivery.event, outcome)
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "webhook %s %s for %s to %s: attempt %d %s%s", delivery.id, delivery.event, delivery.job_id,
                delivery.url, delivery.attempts, outcome, f" ({error})" if error else "")

    def _post(self, delivery: WebhookDelivery, host: str, address: str) -> int:
        secret = secret_for(self.settings, delivery.source)
        if secret is None:
            raise BlockedURL("REELGEN_WEBHOOK_SECRET is not set, so nothing can be signed")
        url = httpx.URL(delivery.url)
        headers = {"content-type": "application/json", "user-agent": "reelgen-webhooks",
                   # the Host the URL names, on a connection to the address that was checked
                   "host": url.netloc.decode("ascii"),
                   **signed_headers(secret, delivery.id, self.outbox.clock(), delivery.payload)}
        # TLS: SNI and certificate checks use the name, while the socket goes to the checked address
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        response = self._http.post(url.copy_with(host=address), content=delivery.payload.encode(), headers=headers,
                                   extensions=extensions)
        return response.status_code

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database may come back; the sender must not die of it
                log.exception("webhook round failed")
            self._stop.wait(self.settings.webhook_poll_seconds)
