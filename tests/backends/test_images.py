"""Input images: formats, size and pixel limits, data URLs, and URL fetching that refuses non-public addresses."""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import threading

import pytest
from PIL import Image

from reelgen.backends.images import (ImageInputError, decode_image, fetch_image, fit_image, parse_data_url,
                                     read_image_reference)
from tests.backends.conftest import png_bytes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_webp_decode_to_rgb(fmt):
    image = decode_image(png_bytes((30, 20), fmt=fmt))
    assert image.mode == "RGB" and image.size == (30, 20)


def test_transparency_becomes_black():
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(buf, "PNG")
    assert decode_image(buf.getvalue()).getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize(("data", "message"), [
    (png_bytes(fmt="GIF"), "not a PNG, JPEG or WebP"),
    (png_bytes(fmt="BMP"), "not a PNG, JPEG or WebP"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a PNG, JPEG or WebP"),
    (b"", "the image is empty"),
    (png_bytes()[:60], "could not be decoded"),  # a PNG cut short
])
def test_other_formats_and_broken_files_are_refused(data, message):
    with pytest.raises(ImageInputError, match=message):
        decode_image(data)


def test_byte_limit():
    with pytest.raises(ImageInputError, match="bytes; the limit is 10"):
        decode_image(png_bytes(), max_bytes=10)


@pytest.mark.parametrize(("side", "message"), [
    (5000, "5000x5000 = 25000000 pixels; the limit is 16777216"),  # ours, read from the header
    (20000, "more pixels than the limit of 16777216"),  # so large that Pillow refuses to open it
])
def test_decompression_bombs_are_refused_before_decoding(side, message):
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")  # megapixels in a few kilobytes
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageInputError, match=message):
        decode_image(buf.getvalue())


def test_data_urls():
    data = png_bytes()
    assert parse_data_url("data:image/png;base64," + base64.b64encode(data).decode()) == data
    assert read_image_reference("data:image/png;base64," + base64.b64encode(data).decode()) == data
    with pytest.raises(ImageInputError, match="'text/html' is not one of image/png"):
        parse_data_url("data:text/html;base64,PGh0bWw+")
    with pytest.raises(ImageInputError, match="must be base64-encoded"):
        parse_data_url("data:image/png,rawbytes")
    with pytest.raises(ImageInputError, match="not valid base64"):
        parse_data_url("data:image/png;base64,***")
    with pytest.raises(ImageInputError, match="holds more than 100 bytes"):
        parse_data_url("data:image/png;base64," + "A" * 1000, max_bytes=100)
    with pytest.raises(ImageInputError, match="not a PNG, JPEG or WebP"):  # the content decides, not the label
        read_image_reference("data:image/png;base64," + base64.b64encode(png_bytes(fmt="GIF")).decode())


def test_references_without_urls():
    assert read_image_reference(png_bytes(), allow_urls=False) == png_bytes()
    with pytest.raises(ImageInputError, match="image bytes, a data URL$"):
        read_image_reference("https://example.com/a.png", allow_urls=False)


def test_fit_image_covers_and_crops_the_centre():
    wide = Image.new("RGB", (100, 50), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 15, 50))  # a blue band on the left, cropped away
    fitted = fit_image(wide, (32, 32))
    assert fitted.size == (32, 32)
    assert fitted.getpixel((0, 16)) == (255, 0, 0)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, "PNG")  # 25 megapixels in about 3 KB
    return buf.getvalue()


class ImageServer:
    """A real HTTP server on 127.0.0.1 with one route per case; it records what it was asked and what it sent."""

    ENDLESS = 64 * 2**20  # the endless route offers this much, without a Content-Length

    def __init__(self):
        self.hits: list[str] = []
        self.endless_sent = 0
        self.endless_done = threading.Event()
        routes = {
            "/red.png": lambda h: h.reply(200, "image/png", png_bytes(size=(40, 24), color=(220, 30, 30))),
            "/page.html": lambda h: h.reply(200, "text/html; charset=utf-8", b"<html>not an image</html>"),
            "/declared-huge.png": lambda h: h.reply(200, "image/png", b"", length=10**9),
            "/endless.png": self._endless,
            "/bomb.png": lambda h: h.reply(200, "image/png", _bomb()),
            "/to-private": lambda h: h.reply(302, "text/plain", b"", location="http://10.0.0.1/a.png"),
            "/to-metadata": lambda h: h.reply(307, "text/plain", b"", location="http://169.254.169.254/latest/"),
            "/to-red": lambda h: h.reply(302, "text/plain", b"", location="/red.png"),
        }
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                routes[self.path](self)

            def reply(self, status, content_type, body, length=None, location=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]

    def _endless(self, handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Connection", "close")  # the body ends when the connection does: no length to check
        handler.end_headers()
        chunk = png_bytes() + bytes(64 * 1024)
        try:
            while self.endless_sent < self.ENDLESS:
                handler.wfile.write(chunk)
                self.endless_sent += len(chunk)
        except OSError:  # the client hung up
            pass
        finally:
            self.endless_done.set()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def image_server():
    server = ImageServer()
    thread = threading.Thread(target=server.http.serve_forever, daemon=True)
    thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def allow_loopback(host, address) -> bool:
    """What a service's allow-list of 127.0.0.1/32 admits; every other non-public address stays refused."""
    return address in ipaddress.ip_network("127.0.0.1/32")


def test_loopback_urls_are_refused_before_connecting(image_server):
    for url in (image_server.url("/red.png"), image_server.url("/red.png", "localhost"),
                image_server.url("/red.png", "[::1]"), image_server.url("/red.png", "0x7f000001")):
        with pytest.raises(ImageInputError, match="non-public address"):
            fetch_image(url)
    assert image_server.hits == []


def test_an_allowed_server_is_fetched_from_and_its_image_used(image_server):
    data = read_image_reference(image_server.url("/red.png"), allow=allow_loopback)
    assert data == png_bytes(size=(40, 24), color=(220, 30, 30))
    first_frame = fit_image(decode_image(data), (16, 16))
    assert first_frame.getpixel((8, 8)) == (220, 30, 30)
    # a redirect within the allowed server is followed
    assert read_image_reference(image_server.url("/to-red"), allow=allow_loopback) == data
    assert image_server.hits == ["/red.png", "/to-red", "/red.png"]


def test_an_allowed_server_still_gets_every_other_check(image_server):
    with pytest.raises(ImageInputError, match="the URL serves text/html, not image/png"):
        read_image_reference(image_server.url("/page.html"), allow=allow_loopback)
    with pytest.raises(ImageInputError, match="the image is 1000000000 bytes; the limit is 1000"):
        read_image_reference(image_server.url("/declared-huge.png"), allow=allow_loopback, max_bytes=1000)
    with pytest.raises(ImageInputError, match="5000x5000 = 25000000 pixels; the limit is"):
        read_image_reference(image_server.url("/bomb.png"), allow=allow_loopback)
    assert image_server.hits == ["/page.html", "/declared-huge.png", "/bomb.png"]


def test_a_body_larger_than_the_limit_is_refused_without_reading_it_all(image_server):
    with pytest.raises(ImageInputError, match="larger than the limit of 65536 bytes"):
        read_image_reference(image_server.url("/endless.png"), allow=allow_loopback, max_bytes=65536)
    assert image_server.endless_done.wait(10)
    # the reader hung up after 64 KiB: the server could push little more than what the socket buffers hold
    assert image_server.endless_sent < ImageServer.ENDLESS / 4


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata"])
def test_a_redirect_to_a_private_address_is_refused(image_server, path):
    with pytest.raises(ImageInputError, match="non-public address"):
        read_image_reference(image_server.url(path), allow=allow_loopback)
    assert image_server.hits == [path]  # asked once; the private target is never connected to


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/a.png", "http://192.168.0.1/a.png", "http://172.16.0.1/a.png",
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/a.png", "http://[fd00::1]/a.png",
    "http://0.0.0.0/a.png", "http://[::ffff:127.0.0.1]/a.png", "http://224.0.0.1/a.png",
])
def test_private_link_local_and_special_addresses_are_refused_before_connecting(url):
    # IP literals resolve without DNS, and the refusal comes before any connection is opened
    with pytest.raises(ImageInputError, match="non-public address"):
        fetch_image(url)


@pytest.mark.parametrize(("url", "message"), [
    ("file:///etc/passwd", "only http and https"),
    ("ftp://example.com/a.png", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("https://user:pw@example.com/a.png", "may not carry credentials"),
    ("http:///a.png", "names no host"),
    ("http://example.com:99999/a.png", r"is not valid \(Port out of range"),
    ("http://example.com:abc/a.png", r"is not valid \(Port could not be cast"),
    ("http://[::1/a.png", r"is not valid \(Invalid IPv6 URL"),
])
def test_other_schemes_and_credentials_are_refused(url, message):
    with pytest.raises(ImageInputError, match=message):
        fetch_image(url)
