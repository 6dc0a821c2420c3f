"""What the tenants' checks refuse with; the API answers it as an OpenAI error (api/errors.py)."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after  # seconds, for the Retry-After header
