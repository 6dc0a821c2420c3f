"""Serving stored files over HTTP: byte ranges, validators, cache headers, and signed expiring links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate

from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse

from reelgen.service.storage import ObjectStore

_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes past the end of the file (HTTP 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range a Range header asks for, or None to send the whole file.

    RFC 9110 lets a server ignore a Range it does not support: several ranges, other
    units and malformed headers all get the whole file rather than an error.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    if not first:  # "-N": the last N bytes
        if not last.isdigit():
            return None
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(size - int(last), 0), size - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(end, size - 1))


def file_response(storage: ObjectStore, key: str, *, size: int, request_headers: Headers, etag: str,
                  last_modified: float, content_type: str, cache_control: str) -> Response:
    """200, 206, 304 or 416 for a stored object, streamed in chunks (never read whole into memory)."""
    headers = {"ETag": etag, "Last-Modified": formatdate(last_modified, usegmt=True), "Cache-Control": cache_control,
               "Accept-Ranges": "bytes"}
    if {etag, "*"} & _etags(request_headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    range_header = request_headers.get("range")
    if_range = request_headers.get("if-range")
    if if_range is not None and if_range != etag:  # the client's partial copy is stale: send it all
        range_header = None
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if byte_range is None:
        byte_range, status = ByteRange(0, size - 1), 200
    else:
        status = 206
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    headers["Content-Length"] = str(byte_range.length)
    return StreamingResponse(_read(storage, key, byte_range), status_code=status, headers=headers,
                             media_type=content_type)


def _read(storage: ObjectStore, key: str, byte_range: ByteRange) -> Iterator[bytes]:
    with storage.open(key) as f:
        f.seek(byte_range.start)
        left = byte_range.length
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    # weak comparison, as RFC 9110 prescribes for If-None-Match
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


class SignatureError(Exception):
    """A signed link that is forged, altered or expired."""


class LinkSigner:
    """HMAC-SHA256 over (video id, variant, expiry): a link grants one file until one moment, nothing else."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time):
        self._key = secret.encode()
        self.clock = clock

    def sign(self, video_id: str, variant: str, expires: int) -> str:
        message = f"{video_id}\n{variant}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, video_id: str, variant: str, expires: int, signature: str) -> None:
        # bytes, not str: compare_digest refuses non-ASCII strings, and a forged link may carry any
        if not hmac.compare_digest(self.sign(video_id, variant, expires).encode(), signature.encode()):
            raise SignatureError("the link's signature does not match: it was altered or signed with another key")
        if expires < self.clock():
            raise SignatureError("the link has expired")
