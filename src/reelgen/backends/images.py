"""Input images for image-to-video: bytes, data URLs and http(s) URLs, checked before any model sees them.

Pillow and the standard library only (no torch), so the API layer can check an `input_reference`
when the request arrives. Limits: encoded size, PNG/JPEG/WebP only (by content, not by name), and
pixel count, checked from the header before decoding (decompression bombs). URLs: http and https
only, every address the host resolves to must be public (no loopback, private, link-local, ...),
the connection goes to the address that was checked (no DNS rebinding), redirects are checked again.
A service may admit chosen non-public hosts or networks (an image server on its own network) with `allow`.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import socket
import ssl
import warnings
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from PIL import Image, ImageOps

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
FETCH_TIMEOUT = 10.0
MAX_REDIRECTS = 3
# (host name, address it resolved to) -> whether to fetch from it although the address is not public
AllowAddress = Callable[[str, ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class ImageInputError(ValueError):
    """An input image (or its URL) that reelgen refuses, with the reason."""


def decode_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Encoded PNG/JPEG/WebP bytes -> an RGB image (first frame, EXIF orientation applied)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ImageInputError("the image is empty")
    if len(data) > max_bytes:
        raise ImageInputError(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        # formats= makes Pillow try only these decoders, whatever the bytes claim to be
        image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError as e:  # Pillow's own hard limit, checked on opening
        raise ImageInputError(f"the image has more pixels than the limit of {max_pixels} ({e})") from e
    except (Image.UnidentifiedImageError, OSError) as e:
        raise ImageInputError(f"the image is not a PNG, JPEG or WebP file ({e})") from e
    width, height = image.size
    if width * height > max_pixels:  # read from the header: nothing is decoded yet
        raise ImageInputError(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageInputError(f"the image could not be decoded ({e})") from e
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (0, 0, 0))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def parse_data_url(url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """'data:image/png;base64,...' -> the image bytes (not yet decoded as an image)."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:"):
        raise ImageInputError("a data URL must look like data:image/png;base64,<data>")
    media_type, *params = header[5:].split(";")
    if media_type.lower() not in IMAGE_FORMATS.values():
        raise ImageInputError(f"data URL type {media_type!r} is not one of {', '.join(IMAGE_FORMATS.values())}")
    if "base64" not in params:
        raise ImageInputError("a data URL image must be base64-encoded (data:image/png;base64,...)")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:  # before decoding: the encoded form of max_bytes
        raise ImageInputError(f"the data URL holds more than {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError(f"the data URL is not valid base64 ({e})") from e


def _public_address(host: str, port: int, allow: AllowAddress | None) -> str:
    """The first address `host` resolves to, if every one of them is public or allowed; ImageInputError otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ImageInputError(f"cannot resolve {host!r} ({e.strerror})") from e
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if (not ip.is_global or ip.is_multicast) and not (allow is not None and allow(host, ip)):
            raise ImageInputError(f"{host!r} resolves to {ip}, a loopback, private, link-local or otherwise "
                                  "non-public address; reelgen fetches images from public addresses only")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, **kwargs):
        super().__init__(host, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, **kwargs):
        super().__init__(host, context=ssl.create_default_context(), **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # the certificate names the host


def fetch_image(url: str, *, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = FETCH_TIMEOUT,
                allow: AllowAddress | None = None) -> bytes:
    """GET an image over http(s) from a public (or allowed) address -> its bytes (at most max_bytes; not decoded)."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:  # a bad port or IPv6 literal: the client's mistake, not a server error
            raise ImageInputError(f"the URL {url!r} is not valid ({e})") from e
        if parts.scheme not in ("http", "https"):
            raise ImageInputError(f"only http and https image URLs are fetched, got {parts.scheme or 'no'} scheme")
        if not parts.hostname:
            raise ImageInputError(f"the URL {url!r} names no host")
        if parts.username or parts.password:
            raise ImageInputError("image URLs may not carry credentials")
        address = _public_address(parts.hostname, port, allow)
        cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = cls(parts.hostname, address, port=port, timeout=timeout)
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"Accept": ", ".join(IMAGE_FORMATS.values()), "User-Agent": "reelgen"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ImageInputError(f"fetching the image failed: HTTP {response.status} {response.reason}")
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if content_type not in IMAGE_FORMATS.values():
                raise ImageInputError(f"the URL serves {content_type or 'no content type'}, not "
                                      f"{', '.join(IMAGE_FORMATS.values())}")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ImageInputError(f"the image is {length} bytes; the limit is {max_bytes}")
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ImageInputError(f"the image is larger than the limit of {max_bytes} bytes")
            return data
        except (OSError, http.client.HTTPException) as e:
            raise ImageInputError(f"fetching the image failed ({e})") from e
        finally:
            conn.close()
    raise ImageInputError(f"too many redirects (more than {MAX_REDIRECTS})")


def read_image_reference(reference: str | bytes, *, max_bytes: int = MAX_IMAGE_BYTES,
                         max_pixels: int = MAX_IMAGE_PIXELS, allow_urls: bool = True,
                         allow: AllowAddress | None = None) -> bytes:
    """An upload (bytes), a data URL or an http(s) URL -> checked image bytes, ready for GenerationRequest.image."""
    if isinstance(reference, (bytes, bytearray)):
        data = bytes(reference)
    elif isinstance(reference, str) and reference.startswith("data:"):
        data = parse_data_url(reference, max_bytes=max_bytes)
    elif isinstance(reference, str) and allow_urls:
        data = fetch_image(reference, max_bytes=max_bytes, allow=allow)
    else:
        raise ImageInputError("an image reference must be image bytes, a data URL"
                              + (" or an http(s) URL" if allow_urls else ""))
    decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)  # the checks; backends decode again
    return data


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover `size` (width, height) and crop the centre: the first frame keeps its proportions."""
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
