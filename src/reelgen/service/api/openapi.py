"""The parts of the OpenAPI document FastAPI cannot infer: a body read as JSON or a form, and 400 instead of 422."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from reelgen.service.api.schemas import ErrorBody, VideoCreate

_REF = "#/components/schemas/{model}"

# POST /v1/videos parses its own body (see create.py), so its schema is declared here
CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": _REF.format(model="VideoCreate")}},
            "multipart/form-data": {"schema": {"$ref": _REF.format(model="VideoCreateForm")}},
        },
    },
}

_DESCRIPTIONS = {400: "invalid request", 401: "missing or wrong API key", 403: "invalid or expired signed link",
                 404: "no such video", 409: "not allowed in the video's current state, or a request with the same "
                                            "Idempotency-Key is in progress",
                 413: "request body too large", 415: "unsupported content type",
                 422: "the Idempotency-Key was used with another request body",
                 429: "over the API key's rate limit (rate_limit_exceeded) or daily quota (insufficient_quota); "
                      "see Retry-After",
                 503: "the job store or file store is unavailable; retry shortly"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, all with the OpenAI error body as JSON (even on routes that
    answer success with a file or an event stream)."""
    content = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}}
    return {status: {"description": _DESCRIPTIONS[status], "content": content} for status in statuses}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, defs = models_json_schema([(VideoCreate, "validation"), (ErrorBody, "serialization")], ref_template=_REF)
    schemas.update(defs["$defs"])
    # which models, sizes and seconds are valid depends on what this service runs: say so in the schema
    services = app.state.services
    schemas["LinkCreate"]["properties"]["expires_in"]["maximum"] = services.settings.max_link_seconds
    models = services.models.values()
    properties = schemas["VideoCreate"]["properties"]
    for name, values in [("model", [m.id for m in models]), ("size", [s for m in models for s in m.sizes]),
                         ("seconds", [s for m in models for s in m.seconds])]:
        properties[name]["anyOf"] = [{"type": "string", "enum": list(dict.fromkeys(values))}, {"type": "null"}]
    image_to_video = any(m.image_to_video for m in models)
    if not image_to_video:  # text-only models answer input_reference with a 400
        del properties["input_reference"]
        del schemas["ImageReference"]
    if services.settings.webhook_secret is None:  # nothing could sign a webhook: any webhook_url is a 400
        del properties["webhook_url"]
    form = {**schemas["VideoCreate"], "title": "VideoCreateForm",
            "description": "POST /v1/videos as multipart/form-data: input_reference may be an image file."}
    # a form has no null: a field is given or left out
    form["properties"] = {name: _not_null(prop) for name, prop in form["properties"].items()}
    if image_to_video:
        form["properties"]["input_reference"] = {
            "anyOf": [{"type": "string", "format": "binary", "contentMediaType": "image/*"},
                      {"$ref": _REF.format(model="ImageReference")}],
            "description": "an image file (png, jpeg, webp) or a reference",
        }
    schemas["VideoCreateForm"] = form
    # validation errors answer 400 with the error body (errors.py), never FastAPI's 422 (create's own 422 stays)
    for operation in (op for path in doc["paths"].values() for op in path.values()):
        responses = operation.get("responses", {})
        if "HTTPValidationError" in json.dumps(responses.get("422", {})):
            del responses["422"]
            responses.setdefault("400", errors(400)[400])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    branches = [branch for branch in prop.get("anyOf", []) if branch != {"type": "null"}]
    if not branches:
        return prop
    rest = {key: value for key, value in prop.items() if key not in ("anyOf", "default")}
    return {**rest, **branches[0]} if len(branches) == 1 else {**rest, "anyOf": branches}
