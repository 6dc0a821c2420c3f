"""Standard Webhooks signatures (https://www.standardwebhooks.com), through the reference `standardwebhooks`
package: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under a `whsec_` secret."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def check_secret(secret: str) -> str:
    """The secret if it is `whsec_<base64 of at least 24 bytes>`, else ValueError saying so."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(SECRET_PREFIX) or len(key) < 24:
        raise ValueError("a webhook secret is 'whsec_' and the base64 of at least 24 random bytes, e.g. "
                         "whsec_$(openssl rand -base64 32)")
    return secret


def signed_headers(secret: str, message_id: str, timestamp: float, body: str) -> dict[str, str]:
    """The three headers a receiver verifies `body` with."""
    when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
    }
