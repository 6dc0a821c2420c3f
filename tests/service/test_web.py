"""The web page at `/`: served with its files, and used in real headless Chromium (Debian's package, driven by
Playwright) against a live server.

The browser tests are slow (a `reelgen serve` start, a browser): marked `slow`. The last saves docs/web.png.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from reelgen.rendering import read_video
from reelgen.service.app import create_app
from tests.service.helpers import FakeGenerator, save_slow_model
from tests.service.live import API_KEY, Server

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "web.png"
# On this test's model (~200 ms a step on one core) the watched job lasts about 8 s, and a job to cancel 40 s: in
# a full CI run a job of 10 s finished before the page's Cancel click reached it (chromium, the server and pytest
# on one busy core).
WATCHED_STEPS = 40
CANCELLED_STEPS = 200
GENERATE_TIMEOUT_MS = 120_000


def test_the_page_and_its_files_are_served_outside_the_api_document(make_settings):
    with TestClient(create_app(make_settings(), [FakeGenerator()])) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        files = re.findall(r'(?:src|href)="(web/[^"]+)"', page.text)
        assert {"web/app.js", "web/style.css"} <= set(files)
        for file in files:
            assert client.get(f"/{file}").status_code == 200, file
        assert client.get("/web/missing.js").json()["error"]["code"] == "not_found"
        paths = client.get("/openapi.json").json()["paths"]
        assert not [path for path in paths if path == "/" or path.startswith("/web")]


@pytest.fixture(scope="module")
def slower_model_dir(tmp_path_factory):
    return save_slow_model(tmp_path_factory.mktemp("slower-model"), dim=256, depth=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory, slower_model_dir):
    server = Server(tmp_path_factory.mktemp("web"), slower_model_dir).start()
    yield server
    server.stop()


@pytest.fixture
def browser_page(server):
    """A fresh Chromium page, its requests and uncaught script errors; checks at the end that all stayed local."""
    chromium = shutil.which("chromium")
    assert chromium, "the browser tests need Debian's chromium (apt-get install chromium)"
    requests, script_errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)  # no `playwright install`: Debian's build
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda request: requests.append(request))
        page.on("pageerror", lambda error: script_errors.append(error))
        page.set_default_timeout(30_000)
        yield page, requests
        browser.close()
    assert not script_errors, script_errors
    # offline: the page fetches nothing but its own files and the API of the service that served it
    assert [r.url for r in requests if not r.url.startswith(server.url + "/")] == []


def _use_key(page: Page) -> None:
    page.fill("#api-key", API_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#model")).to_have_value("reelgen-shapes")


def _generate(page: Page, prompt: str, steps: str = "", seed: str = "") -> None:
    page.fill("#prompt", prompt)
    page.fill("#steps", steps)
    page.fill("#seed", seed)
    page.get_by_role("button", name="Generate").click()


@pytest.mark.slow
def test_without_a_key_no_header_is_sent_and_api_errors_are_shown(browser_page, server):
    page, requests = browser_page
    page.goto(server.url)
    error = page.get_by_role("alert")
    expect(error).to_contain_text("Incorrect or missing API key")
    expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")
    first = next(r for r in requests if r.url.endswith("/v1/models"))
    assert "authorization" not in first.headers

    _use_key(page)
    expect(error).to_be_hidden()
    assert [r for r in requests if "/v1/" in r.url][-1].headers["authorization"] == f"Bearer {API_KEY}"
    expect(page.locator("#size option")).to_have_text(["256x256", "512x512"])
    expect(page.locator("#steps")).to_have_attribute("placeholder", "20")  # the model's default, sent as nothing

    videos_before = server.http().get("/v1/videos", params={"limit": 100}).json()["data"]
    _generate(page, "a red circle", steps="0")
    expect(error).to_contain_text("Invalid 'num_inference_steps'")
    expect(page.locator("#steps")).to_have_attribute("aria-invalid", "true")
    _generate(page, "")
    expect(error).to_contain_text("Missing required parameter: 'prompt'")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#steps")).not_to_have_attribute("aria-invalid", "true")
    assert server.http().get("/v1/videos", params={"limit": 100}).json()["data"] == videos_before

    page.get_by_role("button", name="Dismiss").click()
    expect(error).to_be_hidden()


@pytest.mark.slow
def test_generate_watch_the_progress_play_download_and_cancel(browser_page, server):
    page, _ = browser_page
    http = server.http()
    made_elsewhere = [http.post("/v1/videos", json={"prompt": prompt, "seed": seed, "num_inference_steps": 4}).json()
                      for prompt, seed in [("a green triangle moving up", 2), ("a yellow square moving left", 3)]]
    page.goto(server.url)
    _use_key(page)
    # every value each job's progress bar takes, as the page renders it
    page.evaluate("""() => {
        window.progress = {};
        new MutationObserver((records) => records.forEach((r) =>
            (window.progress[r.target.closest('.job').dataset.id] ??= []).push(Number(r.target.getAttribute('value')))
        )).observe(document.getElementById('jobs'), {subtree: true, attributes: true, attributeFilter: ['value']});
    }""")

    _generate(page, "a red circle moving right", steps=str(WATCHED_STEPS), seed="7")
    card = page.locator(".card", has_text="a red circle moving right")
    expect(card).to_be_visible(timeout=GENERATE_TIMEOUT_MS)
    video_id = card.get_attribute("data-id")
    seen = page.evaluate("id => window.progress[id]", video_id)
    assert len({p for p in seen if 0 < p < 100}) >= 2 and seen == sorted(seen), seen  # it moved, step by step
    video = http.get(f"/v1/videos/{video_id}").json()
    assert (video["status"], video["seed"], video["num_inference_steps"]) == ("completed", 7, WATCHED_STEPS)
    # the videos made by another client are in the gallery too, in the API's order (newest first)
    expect(page.locator(".card")).to_have_count(3)
    listed = [v["id"] for v in http.get("/v1/videos").json()["data"] if v["status"] == "completed"]
    assert [c.get_attribute("data-id") for c in page.locator(".card").all()] == listed
    assert set(listed) == {video_id, *(v["id"] for v in made_elsewhere)}

    # the gallery shows its thumbnail, has read the video's metadata (1 s: 8 frames at 8 fps), and plays on a click
    player = card.locator("video")
    page.wait_for_function("v => performance.getEntriesByName(v.poster).some((e) => e.responseStatus === 200)",
                           arg=player.element_handle())
    assert httpx.get(player.evaluate("v => v.poster"), timeout=30).content[:2] == b"\xff\xd8"  # a JPEG, no key
    page.wait_for_function("v => v.readyState >= 1", arg=player.element_handle())
    assert player.evaluate("v => [v.duration, v.videoWidth, v.videoHeight]") == [pytest.approx(1.0, abs=0.1), 256, 256]
    player.click()
    page.wait_for_function("v => v.currentTime > 0 && v.readyState >= 2 && !v.paused", arg=player.element_handle())

    # the download is a signed link: it works without the key
    link = card.get_by_role("link", name="Download")
    assert link.get_attribute("download") == f"{video_id}.mp4"
    download = httpx.get(link.get_attribute("href"), timeout=30)
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    assert read_video(download.content)[0].shape == (8, 256, 256, 3)

    _generate(page, "a long one, cancelled", steps=str(CANCELLED_STEPS))
    row = page.locator(".job", has_text="a long one, cancelled")
    expect(row.locator(".status")).to_have_text("in progress", timeout=GENERATE_TIMEOUT_MS)
    expect(row.locator(".percent")).not_to_have_text("0%")
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    expect(row.get_by_role("button", name="Cancel")).to_be_hidden()
    assert http.get(f"/v1/videos/{row.get_attribute('data-id')}").json()["status"] == "cancelled"

    # the screenshot shows a job on its way too
    _generate(page, "a blue square bouncing", steps=str(CANCELLED_STEPS))
    running = page.locator(".job", has_text="a blue square bouncing")
    page.wait_for_function("bar => bar.value >= 30", arg=running.locator("progress").element_handle(),
                           timeout=GENERATE_TIMEOUT_MS)
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    # a palette PNG: the screenshot stays small enough to commit
    Image.open(io.BytesIO(page.screenshot())).quantize(colors=128).save(SCREENSHOT, optimize=True)
    assert SCREENSHOT.stat().st_size < 200_000
    http.post(f"/v1/videos/{running.get_attribute('data-id')}/cancel").raise_for_status()
