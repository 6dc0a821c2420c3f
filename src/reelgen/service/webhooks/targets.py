"""Where a video's events go and which secret signs them: the one place that decides."""

from __future__ import annotations

from dataclasses import dataclass

from reelgen.service.settings import ServiceSettings
from reelgen.service.webhooks.signing import check_secret
from reelgen.service.webhooks.ssrf import AllowList, BlockedURL, Resolver, check_url, parse_url, resolve


class WebhookRefused(ValueError):
    """A webhook target this service will not accept; the message says why."""


@dataclass(frozen=True)
class Subscription:
    url: str
    source: str  # "request", "key" or "service": whose URL it is


def resolve_target(settings: ServiceSettings, request_url: str | None, key_url: str | None = None,
                   resolver: Resolver = resolve) -> Subscription | None:
    """The target of a new video's events: the request's `webhook_url`, else its API key's, else the service's,
    else none.

    A request's URL is checked now (SSRF), so a bad one is refused with the request; every target is checked
    again before each attempt.
    """
    if request_url is None:
        if key_url:
            if settings.webhook_secret is None:
                raise WebhookRefused("this API key has a webhook URL, but the service has no "
                                     "REELGEN_WEBHOOK_SECRET to sign webhooks with")
            return Subscription(key_url, "key")
        return Subscription(settings.webhook_url, "service") if settings.webhook_url else None
    if settings.webhook_secret is None:
        raise WebhookRefused("this service has no REELGEN_WEBHOOK_SECRET to sign webhooks with")
    try:
        check_url(request_url, AllowList.parse(settings.webhook_allow_hosts), resolver)
    except BlockedURL as e:
        raise WebhookRefused(str(e)) from e
    return Subscription(request_url, "request")


def secret_for(settings: ServiceSettings, source: str) -> str | None:
    """The secret that signs deliveries of `source`; every source uses the service's secret for now."""
    return settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None


def check_settings(settings: ServiceSettings) -> None:
    """Fail at start, not at the first delivery, on a malformed secret, allow-list or service URL."""
    if settings.webhook_secret is not None:
        check_secret(settings.webhook_secret.get_secret_value())
    AllowList.parse(settings.webhook_allow_hosts)
    if settings.webhook_url:
        if settings.webhook_secret is None:
            raise ValueError("REELGEN_WEBHOOK_URL needs REELGEN_WEBHOOK_SECRET to sign its deliveries")
        try:  # syntax and scheme only: the host may not resolve yet at start; each attempt checks its addresses
            parse_url(settings.webhook_url)
        except BlockedURL as e:
            raise ValueError(f"REELGEN_WEBHOOK_URL: {e}") from e
