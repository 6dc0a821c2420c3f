"""Input images: formats, size and pixel limits, data URLs, and URL fetching that refuses non-public addresses."""

from __future__ import annotations

import base64
import http.server
import io
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


@pytest.fixture
def loopback_server():
    """A server on 127.0.0.1 that counts requests: only to prove that none ever reaches it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png_bytes())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def test_loopback_urls_are_refused_before_connecting(loopback_server):
    port, hits = loopback_server
    for url in (f"http://127.0.0.1:{port}/a.png", f"http://localhost:{port}/a.png", f"http://[::1]:{port}/a.png",
                f"http://0x7f000001:{port}/a.png"):
        with pytest.raises(ImageInputError, match="non-public address"):
            fetch_image(url)
    assert hits == []


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
])
def test_other_schemes_and_credentials_are_refused(url, message):
    with pytest.raises(ImageInputError, match=message):
        fetch_image(url)
