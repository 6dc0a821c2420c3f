"""Webhooks: signed (Standard Webhooks) video.completed / failed / cancelled events, delivered from a durable
outbox with retries, to targets checked against SSRF."""

from reelgen.service.webhooks.models import WebhookDelivery
from reelgen.service.webhooks.outbox import EVENTS, Outbox
from reelgen.service.webhooks.sender import WebhookSender, retry_delay
from reelgen.service.webhooks.targets import Subscription, WebhookRefused, check_settings, resolve_target

__all__ = ["EVENTS", "Outbox", "Subscription", "WebhookDelivery", "WebhookRefused", "WebhookSender",
           "check_settings", "resolve_target", "retry_delay"]
