"""What a create or remix request means for a served model: parsed, checked against its spec, made a job."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from reelgen.backends.base import ModelSpec
from reelgen.backends.images import IMAGE_FORMATS, ImageInputError, read_image_reference
from reelgen.pipelines.request import GenerationRequest
from reelgen.service.api.deps import Caller, Services, SettingsDep
from reelgen.service.api.errors import APIError
from reelgen.service.api.schemas import ImageReference, VideoCreate, VideoPublic
from reelgen.service.jobs import Job
from reelgen.service.jobs.store import new_job_id
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import input_key, job_prefix
from reelgen.service.tenants import Idempotency, admit
from reelgen.service.webhooks import Outbox, Subscription, WebhookRefused, resolve_target
from reelgen.service.webhooks.ssrf import AllowList

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_NESTED_KEY = re.compile(r"^(\w+)\[(\w+)\]$")  # how the openai SDK flattens objects into a form: a[b]


async def read_video_create(request: Request, settings: SettingsDep) -> VideoCreate:
    """The body of POST /v1/videos: JSON, or a form as the openai SDK sends it (extra_body fields included).

    The app's body limit (max_upload_bytes) answers 413 for a larger body, as soon as that many bytes are read."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        try:
            async with request.form(max_part_size=settings.max_upload_bytes) as form:
                data = await _form_fields(form)
        except MultiPartException as e:
            raise APIError.invalid(f"The multipart body could not be parsed: {e.message}", code="invalid_body") from e
        # form values are all strings: lax validation turns "20" into 20
        validate = partial(VideoCreate.model_validate, data)
    elif content_type == "application/json":
        # JSON has types: strict validation refuses "20" or false where a number belongs
        validate = partial(VideoCreate.model_validate_json, await request.body(), strict=True)
    else:
        raise APIError(415, f"Unsupported content type '{content_type}': send application/json or "
                            "multipart/form-data.", code="unsupported_media_type")
    try:
        return validate()
    except ValidationError as e:
        raise APIError.from_validation(e.errors()) from e


VideoCreateDep = Annotated[VideoCreate, Depends(read_video_create)]


async def _form_fields(form: FormData) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in form.items():
        if isinstance(value, UploadFile):
            if key != "input_reference":
                raise APIError.invalid(f"Unexpected file in field '{key}': only input_reference takes a file.", key)
            value = {"image_url": await _data_url(value)}
        elif key == "input_reference":  # an object in a form part is JSON, as OpenAPI encodes it
            try:
                value = json.loads(value)
            except ValueError:
                raise APIError.invalid("input_reference must be an image file or a JSON object.", key) from None
        nested = _NESTED_KEY.match(key)
        if nested:
            data.setdefault(nested[1], {})[nested[2]] = value
        else:
            data[key] = value
    return data


async def _data_url(upload: UploadFile) -> str:
    """An uploaded image as a data URL, the same form a JSON client sends it in (the body limit bounds it)."""
    if upload.content_type not in IMAGE_FORMATS.values():
        raise APIError.invalid(f"input_reference must be an image ({', '.join(IMAGE_FORMATS.values())}), got "
                               f"'{upload.content_type}'.", "input_reference")
    content = await upload.read()
    return f"data:{upload.content_type};base64,{base64.b64encode(content).decode()}"


def create(services: Services, caller: Caller, body: VideoCreate,
           idempotency_key: str | None = None) -> tuple[dict, bool]:
    """Check a create request against its model and queue it -> (the video object to answer, whether it
    replays the answer to an earlier request with the same Idempotency-Key)."""
    if idempotency_key is None:
        return _create(services, caller, body), False
    owner = caller.owner or ""  # while auth is off, every caller shares one set of keys
    earlier = services.idempotency.claim(owner, idempotency_key, request_hash(body))
    if earlier is not None:
        return earlier, True
    try:
        return _create(services, caller, body, lambda session, video: Idempotency.complete(
            session, owner, idempotency_key, video["id"], video)), False
    except BaseException:
        services.idempotency.release(owner, idempotency_key)
        raise


def _create(services: Services, caller: Caller, body: VideoCreate,
            record: Callable[[Session, dict], None] | None = None) -> dict:
    job, image = new_job(body, services.models, services.settings)
    key_url = caller.key.webhook_url if caller.key is not None else None
    try:
        webhook = resolve_target(services.settings, body.webhook_url, key_url)
    except WebhookRefused as e:
        raise APIError.invalid(f"Invalid 'webhook_url': {e}.", "webhook_url", code="invalid_webhook_url") from e
    return _submit(services, caller, job, image, webhook, record)


def remix(services: Services, caller: Caller, source: Job, prompt: str) -> dict:
    """Queue `source` again with a new prompt: same model, settings, seed and first frame."""
    image = services.storage.get(input_key(source.id)) if source.has_image else None
    key_url = caller.key.webhook_url if caller.key is not None else None
    return _submit(services, caller, remix_job(source, prompt, services.models), image,
                   resolve_target(services.settings, None, key_url))


def _submit(services: Services, caller: Caller, job: Job, image: bytes | None, webhook: Subscription | None,
            record: Callable[[Session, dict], None] | None = None) -> dict:
    """Add the job as the caller's, within its limits -> the video object, as it was when added."""
    job.owner = caller.owner
    limits = caller.limits(services.settings)
    answer: dict = {}

    def within(session: Session, added: Job) -> None:
        if limits is not None:
            admit(session, caller.key, limits, services.keys.clock())
        answer.update(VideoPublic.from_job(added).model_dump(mode="json"))
        if record is not None:
            record(session, answer)

    if image is not None:  # stored first: a worker may claim the job the moment it is added
        services.storage.put(input_key(job.id), image)
    if webhook is not None:  # recorded first too: then no finished job can lack its event (webhooks/outbox.py)
        Outbox(services.store.engine).subscribe(job.id, webhook)
    try:
        services.store.add(job, within)
    except Exception:
        if image is not None:  # the job was refused (over a limit) or failed: its first frame is nobody's
            services.storage.delete(job_prefix(job.id))
        raise
    services.executor.wake()
    return answer


def request_hash(body: VideoCreate) -> str:
    """The request as parsed, so the same fields as JSON or as a form (any boundary) are the same request."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def new_job(body: VideoCreate, models: dict[str, ModelSpec], settings: ServiceSettings) -> tuple[Job, bytes | None]:
    """Resolve a create request against its model's spec (defaults, size, seconds) -> a job and its first frame."""
    if body.model is None:
        spec = next(iter(models.values()))
    elif body.model in models:
        spec = models[body.model]
    else:
        raise APIError.invalid(f"Model '{body.model}' is not served here; available: {', '.join(models)}.",
                               "model", code="model_not_found")
    size = body.size or spec.default_size
    if size not in spec.sizes:
        raise APIError.invalid(f"Invalid 'size': '{size}' is not supported by {spec.id}; supported values are "
                               f"{', '.join(spec.sizes)}.", "size", code="unsupported_value")
    seconds = body.seconds or spec.default_seconds
    if seconds not in spec.seconds:
        raise APIError.invalid(f"Invalid 'seconds': '{seconds}' is not supported by {spec.id}; supported values "
                               f"are {', '.join(spec.seconds)}.", "seconds", code="unsupported_value")
    image = _input_image(body.input_reference, spec, settings)
    sampler = body.sampler or spec.default_sampler
    if sampler not in spec.samplers:
        raise APIError.invalid(f"Invalid 'sampler': '{sampler}' is not supported by {spec.id}; supported values are "
                               f"{', '.join(spec.samplers)}.", "sampler", code="unsupported_value")
    request = GenerationRequest(
        prompt=body.prompt, negative_prompt=body.negative_prompt,
        seed=secrets.randbelow(2**32) if body.seed is None else body.seed,
        frames=spec.frames_for(seconds), steps=body.num_inference_steps or spec.default_steps,
        guidance_scale=spec.default_guidance_scale if body.guidance_scale is None else body.guidance_scale,
        sampler=sampler,
    )
    job = _job(request, spec, size=size, seconds=seconds, fps=body.fps or spec.fps, video_format=body.format,
               has_image=image is not None)
    return job, image


def _input_image(reference: ImageReference | None, spec: ModelSpec, settings: ServiceSettings) -> bytes | None:
    """The checked bytes of the first frame a request gives, None if it gives none."""
    if reference is None:
        if spec.requires_image:
            raise APIError.invalid(f"Model {spec.id} makes videos from an image: give input_reference.",
                                   "input_reference", code="missing_required_parameter")
        return None
    if (reference.image_url is None) == (reference.file_id is None):
        raise APIError.invalid("input_reference needs exactly one of image_url and file_id.", "input_reference")
    if not spec.image_to_video:
        raise APIError.invalid(f"Model {spec.id} generates from text only; input_reference needs an "
                               "image-to-video model.", "input_reference", code="unsupported_parameter")
    if reference.file_id is not None:
        raise APIError.invalid("input_reference.file_id needs a files API this service does not have: upload "
                               "the image or give its image_url.", "input_reference", code="unsupported_parameter")
    try:
        return read_image_reference(reference.image_url, max_bytes=settings.max_upload_bytes,
                                    allow=AllowList.parse(settings.image_allow_hosts).allows)
    except ImageInputError as e:
        raise APIError.invalid(f"Invalid 'input_reference': {e}.", "input_reference") from e


def remix_job(source: Job, prompt: str, models: dict[str, ModelSpec]) -> Job:
    """Same model, settings and seed as `source`, a new prompt."""
    if source.model not in models:
        raise APIError.invalid(f"Model '{source.model}' of video {source.id} is no longer served.", "model",
                               code="model_not_found")
    request = GenerationRequest(prompt=prompt, negative_prompt=source.negative_prompt, seed=source.seed,
                                frames=source.frames, steps=source.steps, guidance_scale=source.guidance_scale,
                                sampler=source.sampler)
    return _job(request, models[source.model], size=source.size, seconds=source.seconds, fps=source.fps,
                video_format=source.format, has_image=source.has_image, remixed_from_video_id=source.id)


def _job(request: GenerationRequest, spec: ModelSpec, *, size: str, seconds: str, fps: int, video_format: str,
         has_image: bool, remixed_from_video_id: str | None = None) -> Job:
    try:
        request.check(spec.max_frames)
    except ValueError as e:
        raise APIError.invalid(str(e)) from e
    return Job(id=new_job_id(), model=spec.id, prompt=request.prompt, negative_prompt=request.negative_prompt,
               seed=request.seed, size=size, seconds=seconds, frames=request.frames, steps=request.steps,
               guidance_scale=request.guidance_scale, sampler=request.sampler, fps=fps, format=video_format,
               has_image=has_image, remixed_from_video_id=remixed_from_video_id)
