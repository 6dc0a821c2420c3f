"""The HTTP API in-process (TestClient) over the tiny built-in model: OpenAI shapes, bad inputs, delivery."""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from reelgen.rendering import read_video
from reelgen.service.app import create_app
from tests.service.helpers import FAKE_SPEC, FakeGenerator, wait_until

TERMINAL = ("completed", "failed", "cancelled")
IMAGE_TO_VIDEO = replace(FAKE_SPEC, id="fake-i2v", image_to_video=True, requires_image=True)


@pytest.fixture
def make_client(open_app, tiny_generator):
    return lambda generators=None, **settings: open_app(generators or [tiny_generator], **settings)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_generator):
    from reelgen.service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("api"), poll_seconds=0.05, signing_secret="s")
    with TestClient(create_app(settings, [tiny_generator])) as client:
        yield client


def _create(client, **body) -> dict:
    response = client.post("/v1/videos", json={"prompt": "a red circle moving right", "num_inference_steps": 2,
                                               **body})
    assert response.status_code == 200, response.text
    return response.json()


def _finish(client, video_id: str) -> dict:
    return wait_until(lambda: (v := client.get(f"/v1/videos/{video_id}").json())["status"] in TERMINAL and v,
                      timeout=120, message=f"{video_id} to finish")


@pytest.fixture(scope="module")
def completed(client) -> dict:
    video = _finish(client, _create(client, seed=3)["id"])
    assert video["status"] == "completed", video
    return video


def _error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_create_answers_at_once_with_a_queued_openai_video_object(client):
    video = _create(client, seed=5, guidance_scale=1.0, sampler="ddim", fps=4)
    assert video["id"].startswith("video_") and video["object"] == "video"
    assert video["status"] in ("queued", "in_progress") and video["progress"] < 100
    assert (video["model"], video["size"], video["seconds"]) == ("reelgen-shapes", "256x256", "1")
    assert (video["seed"], video["guidance_scale"], video["sampler"], video["fps"]) == (5, 1.0, "ddim", 4)
    assert video["frames"] == 8 and video["remixed_from_video_id"] is None


def test_a_completed_video_has_timings_expiry_and_decodable_files(client, completed):
    assert completed["progress"] == 100 and completed["error"] is None and completed["attempts"] == 1
    assert completed["expires_at"] > completed["completed_at"] >= completed["created_at"]
    assert {"queue_wait", "model_load", "encode_text", "denoise", "decode", "render", "store"} <= set(
        completed["timings"])
    response = client.get(f"/v1/videos/{completed['id']}/content")
    assert response.headers["content-type"] == "video/mp4"
    frames, fps = read_video(response.content)
    assert frames.shape == (8, 256, 256, 3) and fps == 8
    for variant in ("thumbnail", "spritesheet"):
        image = client.get(f"/v1/videos/{completed['id']}/content", params={"variant": variant})
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


def test_create_reads_multipart_forms_as_the_openai_sdk_sends_them(client):
    form = {"prompt": "a blue square", "seconds": "1", "size": "512x512", "seed": "9", "num_inference_steps": "2",
            "guidance_scale": "1.5", "format": "webm"}
    # (None, value) parts are plain fields: the body is multipart/form-data without a file, as the SDK sends it
    response = client.post("/v1/videos", files={key: (None, value) for key, value in form.items()})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    video = response.json()
    assert response.status_code == 200, video
    assert (video["size"], video["seed"], video["guidance_scale"], video["format"]) == ("512x512", 9, 1.5, "webm")
    done = _finish(client, video["id"])
    response = client.get(f"/v1/videos/{done['id']}/content")
    assert response.headers["content-type"] == "video/webm"
    assert read_video(response.content)[0].shape == (8, 512, 512, 3)


def test_progress_moves_step_by_step_and_events_stream_it(make_client):
    client = make_client(generators=[FakeGenerator(step_seconds=0.1)])
    video = _create(client, num_inference_steps=10)
    with client.stream("GET", f"/v1/videos/{video['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    progress = [e["progress"] for e in events]
    assert events[-1]["status"] == "completed" and progress == sorted(progress)
    assert len([p for p in progress if 0 < p < 100]) >= 2  # seen between 0 and 100, not only at the ends


def test_list_pages_with_cursors(make_client):
    client = make_client(generators=[FakeGenerator(step_seconds=60)])  # nothing finishes: only records matter
    ids = [_create(client)["id"] for _ in range(3)]
    page = client.get("/v1/videos", params={"limit": 2, "order": "asc"}).json()
    assert page["object"] == "list" and page["has_more"]
    assert [v["id"] for v in page["data"]] == ids[:2] and (page["first_id"], page["last_id"]) == (ids[0], ids[1])
    rest = client.get("/v1/videos", params={"after": page["last_id"], "order": "asc"}).json()
    assert [v["id"] for v in rest["data"]] == ids[2:] and not rest["has_more"]
    newest = client.get("/v1/videos").json()
    assert [v["id"] for v in newest["data"]] == ids[::-1]


def test_cancel_a_queued_video(make_client):
    client = make_client(generators=[FakeGenerator(step_seconds=60)], workers=1)
    _create(client, model="fake")  # holds the only worker
    queued = _create(client, model="fake")
    cancelled = client.post(f"/v1/videos/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["completed_at"] is not None
    _error(client.get(f"/v1/videos/{queued['id']}/content"), 409)


def test_remix_keeps_every_setting_but_the_prompt(client, completed):
    remix = client.post(f"/v1/videos/{completed['id']}/remix", json={"prompt": "a green triangle"}).json()
    assert remix["remixed_from_video_id"] == completed["id"] and remix["prompt"] == "a green triangle"
    for field in ("model", "size", "seconds", "seed", "num_inference_steps", "guidance_scale", "sampler", "fps"):
        assert remix[field] == completed[field]
    assert _finish(client, remix["id"])["status"] == "completed"


def test_delete_removes_the_record_and_its_files(client, make_settings):
    video = _finish(client, _create(client)["id"])
    files = client.app.state.services.storage
    assert files.children(f"videos/{video['id']}")
    deleted = client.delete(f"/v1/videos/{video['id']}").json()
    assert deleted == {"id": video["id"], "object": "video.deleted", "deleted": True}
    _error(client.get(f"/v1/videos/{video['id']}"), 404, "video_id")
    assert files.children(f"videos/{video['id']}") == []


def test_range_requests_and_validators(client, completed):
    url = f"/v1/videos/{completed['id']}/content"
    whole = client.get(url)
    size = len(whole.content)
    etag = whole.headers["etag"]
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["last-modified"]
    assert "max-age" in whole.headers["cache-control"]
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}" and part.headers["content-length"] == "10"
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole.content[-5:]
    beyond = client.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    stale = client.get(url, headers={"Range": "bytes=0-0", "If-Range": '"an old etag"'})
    assert stale.status_code == 200 and len(stale.content) == size


def test_signed_links_work_without_a_key_until_they_expire(make_client, tiny_generator):
    client = make_client(api_keys=["k1"])
    keyed = {"Authorization": "Bearer k1"}
    _error(client.get("/v1/videos"), 401)
    _error(client.get("/v1/videos", headers={"Authorization": "Bearer wrong"}), 401)
    video = client.post("/v1/videos", json={"prompt": "a ball", "num_inference_steps": 2}, headers=keyed).json()
    video = wait_until(lambda: (v := client.get(f"/v1/videos/{video['id']}", headers=keyed).json())["status"]
                       == "completed" and v, timeout=120)
    url = f"/v1/videos/{video['id']}/content"
    _error(client.get(url), 401)
    assert client.get(url, headers=keyed).headers["cache-control"].startswith("private")
    link = client.post(f"/v1/videos/{video['id']}/link", json={"variant": "thumbnail", "expires_in": 60},
                       headers=keyed).json()
    shared = client.get(link["url"])
    assert shared.status_code == 200 and shared.headers["content-type"] == "image/jpeg"
    assert shared.headers["cache-control"].startswith("public")
    _error(client.get(link["url"].replace("thumbnail", "video")), 403)  # a link opens one file only
    _error(client.get(link["url"][:-3] + "abc"), 403)
    signer = client.app.state.services.signer
    signer.clock = lambda: link["expires_at"] + 1
    error = _error(client.get(link["url"]), 403)
    assert "expired" in error["message"]


def test_models_are_listed_with_their_sizes_and_seconds(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    model = models["data"][0]
    assert model["id"] == "reelgen-shapes" and model["object"] == "model"
    assert model["sizes"] == ["256x256", "512x512"] and model["seconds"] == ["1"]
    assert model["samplers"] == ["ddim", "dpm++", "unipc", "euler", "ddpm"] and model["default_sampler"] == "dpm++"
    assert client.get("/v1/models/reelgen-shapes").json() == model
    _error(client.get("/v1/models/sora-2"), 404, "model")


@pytest.mark.parametrize(("body", "status", "param"), [
    ({}, 400, "prompt"),
    ({"prompt": "   "}, 400, "prompt"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": "x", "bogus": 1}, 400, "bogus"),
    ({"prompt": "x", "size": "1280x720"}, 400, "size"),
    ({"prompt": "x", "seconds": "12"}, 400, "seconds"),
    ({"prompt": "x", "seconds": 1.5}, 400, "seconds"),
    ({"prompt": "x", "model": "sora-2"}, 400, "model"),
    ({"prompt": "x", "num_inference_steps": 0}, 400, "num_inference_steps"),
    ({"prompt": "x", "num_inference_steps": 10_000}, 400, "num_inference_steps"),
    ({"prompt": "x", "guidance_scale": -1}, 400, "guidance_scale"),
    ({"prompt": "x", "guidance_scale": False}, 400, "guidance_scale"),
    ({"prompt": "x", "num_inference_steps": "20"}, 400, "num_inference_steps"),  # JSON is typed; forms are not
    ({"prompt": "x", "sampler": "magic"}, 400, "sampler"),
    ({"prompt": "x", "seed": -1}, 400, "seed"),
    ({"prompt": "x", "seed": 2**64}, 400, "seed"),
    ({"prompt": "x", "fps": 0}, 400, "fps"),
    ({"prompt": "x", "format": "avi"}, 400, "format"),
    ({"prompt": "x", "input_reference": {"image_url": "data:image/png;base64,AAAA"}}, 400, "input_reference"),
    ({"prompt": "x", "input_reference": {}}, 400, "input_reference"),
    ([1, 2], 400, None),
])
def test_bad_create_bodies_get_a_400_naming_the_parameter(client, body, status, param):
    _error(client.post("/v1/videos", json=body), status, param)


def test_unsupported_sizes_and_seconds_list_the_supported_ones(client):
    assert "256x256, 512x512" in _error(client.post("/v1/videos", json={"prompt": "x", "size": "9x9"}), 400)[
        "message"]
    assert "are 1" in _error(client.post("/v1/videos", json={"prompt": "x", "seconds": "4"}), 400)["message"]


def test_malformed_bodies_and_limits(make_client):
    client = make_client(max_upload_bytes=1000)
    _error(client.post("/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    _error(client.post("/v1/videos", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    _error(client.post("/v1/videos", content=b"prompt", headers={"Content-Type": "text/plain"}), 415)
    _error(client.post("/v1/videos", json={"prompt": "x" * 2000}), 413)
    image = ("a.png", b"\x89PNG" + b"0" * 2000, "image/png")
    _error(client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": image}), 413)
    _error(client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.txt", b"hi", "text/plain")}),
           400, "input_reference")
    _error(client.post("/v1/videos/video_x/remix", content=b"[", headers={"Content-Type": "application/json"}), 400)


def test_unknown_videos_are_404_everywhere(client):
    missing = "video_doesnotexist"
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/cancel"), ("GET", "/content"), ("GET", "/events")]:
        _error(client.request(method, f"/v1/videos/{missing}{path}"), 404)
    _error(client.post(f"/v1/videos/{missing}/remix", json={"prompt": "x"}), 404)
    _error(client.post(f"/v1/videos/{missing}/link", json={}), 404)
    _error(client.get("/v1/nothing-here"), 404)


def test_state_conflicts_are_409(client, completed, make_client):
    _error(client.post(f"/v1/videos/{completed['id']}/cancel"), 409)
    slow = make_client(generators=[FakeGenerator(step_seconds=60)])
    running = _create(slow, model="fake")["id"]
    _error(slow.post(f"/v1/videos/{running}/remix", json={"prompt": "y"}), 409)
    _error(slow.get(f"/v1/videos/{running}/content"), 409)
    _error(slow.post(f"/v1/videos/{running}/link", json={}), 409)


def test_bad_query_parameters_are_4xx(client, completed):
    _error(client.get("/v1/videos", params={"limit": "many"}), 400, "limit")
    _error(client.get("/v1/videos", params={"limit": 0}), 400, "limit")
    _error(client.get("/v1/videos", params={"order": "sideways"}), 400, "order")
    _error(client.get("/v1/videos", params={"after": "video_nope"}), 404, "after")
    _error(client.get(f"/v1/videos/{completed['id']}/content", params={"variant": "poster"}), 400, "variant")
    _error(client.get(f"/v1/videos/{completed['id']}/content", params={"expires": 1}), 403, "signature")
    _error(client.post(f"/v1/videos/{completed['id']}/link", json={"expires_in": 10**9}), 400, "expires_in")


def test_expired_files_are_gone_but_the_record_stays(client):
    video = _finish(client, _create(client)["id"])
    services = client.app.state.services
    services.store.mark_files_deleted(video["id"])
    assert client.get(f"/v1/videos/{video['id']}").json()["status"] == "completed"
    assert _error(client.get(f"/v1/videos/{video['id']}/content"), 404)["code"] == "video_expired"


def test_the_openapi_document_describes_every_route_and_both_create_bodies(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, methods in {"/v1/videos": {"get", "post"}, "/v1/videos/{video_id}": {"get", "delete"},
                          "/v1/videos/{video_id}/remix": {"post"}, "/v1/videos/{video_id}/cancel": {"post"},
                          "/v1/videos/{video_id}/content": {"get"}, "/v1/videos/{video_id}/events": {"get"},
                          "/v1/videos/{video_id}/link": {"post"}, "/v1/models": {"get"}}.items():
        assert methods <= set(paths[path]), path
    body = paths["/v1/videos"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    text = json.dumps(doc)
    assert "HTTPValidationError" not in text  # bad input is 400; only a reused Idempotency-Key is 422
    assert [op for ops in paths.values() for op in ops.values() if "422" in op["responses"]] == [
        paths["/v1/videos"]["post"]]
    schemas = doc["components"]["schemas"]
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    create = schemas["VideoCreate"]["properties"]
    assert {"seed", "num_inference_steps", "sampler"} <= set(create)
    assert "input_reference" not in create  # no served model takes a first frame
    assert create["size"]["anyOf"][0]["enum"] == ["256x256", "512x512"]
    assert create["seconds"]["anyOf"][0]["enum"] == ["1"]
    assert "cancelled" in json.dumps(schemas["VideoPublic"]["properties"]["status"])
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_to_video_takes_an_upload_or_a_data_url_and_a_remix_keeps_the_image(make_client):
    generator = FakeGenerator(spec=IMAGE_TO_VIDEO)
    client = make_client(generators=[generator])
    png = _png()
    upload = client.post("/v1/videos", data={"prompt": "it moves"},
                         files={"input_reference": ("first.png", png, "image/png")})
    assert _finish(client, upload.json()["id"])["status"] == "completed"
    assert generator.requests[-1].image == png and generator.requests[-1].size == (256, 256)
    data_url = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    by_url = _create(client, input_reference={"image_url": data_url})
    assert _finish(client, by_url["id"])["status"] == "completed" and generator.requests[-1].image == png
    remix = client.post(f"/v1/videos/{by_url['id']}/remix", json={"prompt": "it stops"}).json()
    assert _finish(client, remix["id"])["status"] == "completed"
    assert (generator.requests[-1].prompt, generator.requests[-1].image) == ("it stops", png)
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "input_reference" in schema["VideoCreate"]["properties"]


def test_image_urls_are_fetched_from_private_hosts_only_when_the_settings_allow_them(make_client, tmp_path):
    from tests.backends.test_images import ImageServer

    server = ImageServer()
    thread = threading.Thread(target=server.http.serve_forever, daemon=True)
    thread.start()
    try:
        body = {"prompt": "it moves", "input_reference": {"image_url": server.url("/red.png")}}
        # its own database, or its workers could take the second app's job
        refusing = make_client(generators=[FakeGenerator(spec=IMAGE_TO_VIDEO)], data_dir=tmp_path / "refusing")
        refused = refusing.post("/v1/videos", json=body)
        assert "public addresses only" in _error(refused, 400, "input_reference")["message"]
        assert server.hits == []
        generator = FakeGenerator(spec=IMAGE_TO_VIDEO)
        client = make_client(generators=[generator], image_allow_hosts="127.0.0.1/32")
        assert _finish(client, _create(client, **body)["id"])["status"] == "completed"
        assert server.hits == ["/red.png"] and Image.open(io.BytesIO(generator.requests[-1].image)).size == (40, 24)
    finally:
        server.http.shutdown()
        server.http.server_close()


def test_a_malformed_image_allow_list_stops_the_start(make_settings):
    with pytest.raises(ValueError, match="allow-list entry"):
        create_app(make_settings(image_allow_hosts="10.0.0.0/33"))


@pytest.mark.parametrize(("reference", "code"), [
    (None, "missing_required_parameter"),
    ({"image_url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}, "invalid_value"),
    ({"image_url": "http://127.0.0.1/first.png"}, "invalid_value"),  # never fetched from a private address
    ({"file_id": "file_123"}, "unsupported_parameter"),
    ({"image_url": "data:,x", "file_id": "file_123"}, "invalid_value"),
])
def test_bad_input_images_are_refused_before_queueing(make_client, reference, code):
    client = make_client(generators=[FakeGenerator(spec=IMAGE_TO_VIDEO)])
    body = {"prompt": "x"} | ({} if reference is None else {"input_reference": reference})
    assert _error(client.post("/v1/videos", json=body), 400, "input_reference")["code"] == code
    assert client.get("/v1/videos").json()["data"] == []


def test_a_models_file_chooses_what_is_served(make_settings, tmp_path, tiny_model_dir):
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nid = "shapes-tiny"\nbackend = "builtin"\npath = "{tiny_model_dir}"\n'
                      'description = "the tiny test model"\n')
    client = TestClient(create_app(make_settings(models_file=models)))
    with client:
        served = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["description"]) for m in served] == [("shapes-tiny", "the tiny test model")]
