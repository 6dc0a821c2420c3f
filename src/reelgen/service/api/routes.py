"""The /v1 routes: thin, each one a store call or two; the logic lives in create.py, the store and delivery."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable
from dataclasses import asdict
from typing import Annotated, Literal
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from reelgen.rendering.video import CONTENT_TYPES
from reelgen.service.api.create import VideoCreateDep, create, remix
from reelgen.service.api.deps import (
    CallerDep,
    CredentialsDep,
    ModelsDep,
    ServicesDep,
    StorageDep,
    StoreDep,
    VideoDep,
    VideoId,
    authenticate,
    current_caller,
    owned_video,
)
from reelgen.service.api.errors import APIError
from reelgen.service.api.openapi import CREATE_BODY, errors
from reelgen.service.api.schemas import (
    LinkCreate,
    LinkPublic,
    ModelList,
    ModelPublic,
    RemixCreate,
    UsagePublic,
    Variant,
    VideoDeleted,
    VideoList,
    VideoPublic,
)
from reelgen.service import usage
from reelgen.service.delivery import SignatureError, file_response
from reelgen.service.jobs import TERMINAL, Job, JobConflict, JobStatus
from reelgen.service.logs import job_id_var
from reelgen.service.storage import job_prefix, output_key
from reelgen.service.tenants import compute_today

log = logging.getLogger(__name__)

# the openai SDK's poll() waits this long between GETs of a running job
_POLL_AFTER_MS = "500"
_EVENTS_POLL_SECONDS = 0.2
_CACHE_SECONDS = 3600



async def _log_context(request: Request) -> None:
    # async, so it runs in the request's own context and the id reaches the (threadpool) route and its logs
    if "video_id" in request.path_params:
        job_id_var.set(request.path_params["video_id"])


# every keyed route may answer 429: the key's requests per minute (counted in current_caller)
router = APIRouter(prefix="/v1", dependencies=[Depends(current_caller), Depends(_log_context)],
                   responses=errors(401, 429))
# GET .../content authorizes by key or by a signed link, so it sits outside the keyed router
content_router = APIRouter(prefix="/v1", dependencies=[Depends(_log_context)])


@router.post("/videos", response_model=VideoPublic, openapi_extra=CREATE_BODY,
             responses=errors(400, 409, 413, 415, 422), summary="Create a video", tags=["videos"])
def create_video(
    caller: CallerDep, body: VideoCreateDep, services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=255, description="a unique key per create: a retry with the same key and body "
        "returns the same video instead of making another (kept 24 h, per API key)")] = None,
) -> VideoPublic | JSONResponse:
    video, replayed = create(services, caller, body, idempotency_key)
    job_id_var.set(video["id"])
    if replayed:
        log.info("replayed %s for Idempotency-Key %r", video["id"], idempotency_key)
        return JSONResponse(video, headers={"Idempotent-Replayed": "true"})
    log.info("queued %s: model %s, %s, %d frames, %d steps", video["id"], video["model"], video["size"],
             video["frames"], video["num_inference_steps"])
    return VideoPublic.model_validate(video)


@router.get("/videos", response_model=VideoList, responses=errors(400, 404), summary="List videos", tags=["videos"])
def list_videos(store: StoreDep, caller: CallerDep,
                after: Annotated[str | None, Query(description="id of the last video of the previous page")] = None,
                limit: Annotated[int, Query(ge=1, le=100)] = 20,
                order: Annotated[Literal["asc", "desc"], Query(description="by creation time")] = "desc") -> VideoList:
    try:
        jobs, has_more = store.list(owner=caller.owner, after=after, limit=limit, order=order)
    except KeyError:
        raise APIError(404, f"No video found with id '{after}' (the 'after' cursor).", param="after",
                       code="video_not_found") from None
    data = [VideoPublic.from_job(job) for job in jobs]
    return VideoList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                     has_more=has_more)


@router.get("/videos/{video_id}", response_model=VideoPublic, responses=errors(404), summary="Retrieve a video",
            tags=["videos"])
async def retrieve_video(video: VideoDep, response: Response) -> VideoPublic:  # no I/O: async spares a thread hop
    if video.status not in TERMINAL:
        response.headers["openai-poll-after-ms"] = _POLL_AFTER_MS
    return VideoPublic.from_job(video)


@router.delete("/videos/{video_id}", response_model=VideoDeleted, responses=errors(404, 503),
               summary="Delete a video and its files (a running one stops)", tags=["videos"])
def delete_video(video: VideoDep, store: StoreDep, storage: StorageDep) -> VideoDeleted:
    video_id = video.id
    # Files first: with the store down the video stays, whole, for the client to delete again. Once more after
    # the record goes, for files a worker completed in between.
    try:
        storage.delete(job_prefix(video_id))
    except Exception as e:
        raise _storage_unavailable(e) from e
    if store.delete(video_id) is None:
        raise APIError.not_found(video_id)
    try:
        storage.delete(job_prefix(video_id))
    except Exception:
        log.exception("the files of deleted video %s could not be removed", video_id)
    log.info("deleted %s and its files", video_id)
    return VideoDeleted(id=video_id)


@router.post("/videos/{video_id}/remix", response_model=VideoPublic, responses=errors(400, 404, 409),
             summary="Remix a completed video: same settings and seed, new prompt", tags=["videos"])
def remix_video(video: VideoDep, body: RemixCreate, services: ServicesDep, caller: CallerDep) -> VideoPublic:
    if video.status != JobStatus.COMPLETED:
        raise APIError(409, f"Video {video.id} is {video.status}; only a completed video can be remixed.",
                       code="video_not_completed")
    return VideoPublic.model_validate(remix(services, caller, video, body.prompt))


@router.post("/videos/{video_id}/cancel", response_model=VideoPublic, responses=errors(404, 409),
             summary="Cancel a queued or running video (stops within one denoising step)", tags=["videos"])
def cancel_video(video: VideoDep, store: StoreDep) -> VideoPublic:
    video_id = video.id
    try:
        job = store.cancel(video_id)
    except JobConflict as e:
        raise APIError(409, str(e), code="video_finished") from e
    if job is None:
        raise APIError.not_found(video_id)
    log.info("cancelled %s", video_id)
    return VideoPublic.from_job(job)


@router.get("/videos/{video_id}/events", response_class=EventSourceResponse, responses=errors(404),
            summary="Stream the video object as server-sent events while it changes, until it finishes",
            tags=["videos"])
async def video_events(video: VideoDep, store: StoreDep) -> AsyncIterable[VideoPublic]:
    job, last = video, None
    while job is not None:
        current = VideoPublic.from_job(job)
        if (current.status, current.progress) != last:
            last = (current.status, current.progress)
            yield current
        if job.status in TERMINAL:
            return
        await anyio.sleep(_EVENTS_POLL_SECONDS)
        job = await run_in_threadpool(store.get, job.id)


@router.post("/videos/{video_id}/link", response_model=LinkPublic, responses=errors(400, 404, 409),
             summary="Sign an expiring URL to one file of a completed video, usable without an API key",
             tags=["videos"])
def link_video(video: VideoDep, body: LinkCreate, services: ServicesDep, request: Request) -> LinkPublic:
    _check_downloadable(video)
    if body.expires_in > services.settings.max_link_seconds:
        raise APIError.invalid(f"Invalid 'expires_in': at most {services.settings.max_link_seconds} seconds.",
                               "expires_in")
    expires = int(services.signer.clock()) + body.expires_in
    query = {"variant": body.variant, "expires": expires,
             "signature": services.signer.sign(video.id, body.variant, expires)}
    url = f"{request.url_for('download_video_content', video_id=video.id)}?{urlencode(query)}"
    return LinkPublic(url=url, variant=body.variant, expires_at=expires)


@content_router.get(
    "/videos/{video_id}/content", response_class=Response, tags=["videos"],
    # the bearer key is optional here: a signed link stands in for it (FastAPI appends this to its own entry)
    openapi_extra={"security": [{}]},
    summary="Download the video, its thumbnail or its spritesheet (Range requests, ETag; key or signed link)",
    responses={
        200: {"description": "the whole file",
              "content": {t: {"schema": {"type": "string", "format": "binary"}}
                          for t in ("video/mp4", "video/webm", "image/gif", "image/jpeg")}},
        206: {"description": "the requested byte range"},
        307: {"description": "S3 storage: the file is at a presigned URL of the store, valid presign_seconds "
                             "at most (and no longer than a signed link or the video's retention)",
              "headers": {"Location": {"description": "the presigned URL", "schema": {"type": "string"}}}},
        304: {"description": "the client's copy (If-None-Match) is current"},
        **errors(400, 401, 403, 404, 409, 429),
        416: {"description": "the range starts past the end of the file"},
        **errors(503),
    },
)
def download_video_content(
    video_id: VideoId, request: Request, credentials: CredentialsDep, services: ServicesDep,
    variant: Annotated[Variant, Query(description="which file")] = "video",
    expires: Annotated[int | None, Query(description="signed links: unix time the link expires")] = None,
    signature: Annotated[str | None, Query(description="signed links: the link's signature")] = None,
) -> Response:
    signed = expires is not None or signature is not None
    if signed:
        if expires is None or signature is None:
            raise APIError(403, "Invalid download link: it needs both 'expires' and 'signature'.", param="signature",
                           code="invalid_signature")
        try:
            services.signer.verify(video_id, variant, expires, signature)
        except SignatureError as e:
            raise APIError(403, f"Invalid download link: {e}.", code="invalid_signature") from e
        video = services.store.get(video_id)
        if video is None:
            raise APIError.not_found(video_id)
    else:  # the signature stands for the key that signed the link; without one, only the owner's key opens it
        video = owned_video(video_id, services.store, authenticate(credentials, services))
    _check_downloadable(video)
    key = output_key(video.id, video.output_token, variant, video.format)
    storage = services.storage
    try:
        info = storage.info(key)
    except Exception as e:
        raise _storage_unavailable(e) from e
    if info is None:
        raise APIError(404, f"The {variant} of video {video.id} is missing from storage.", code="file_missing")
    now = time.time()
    max_age = min(_CACHE_SECONDS, int(video.expires_at - now)) if video.expires_at else _CACHE_SECONDS
    if signed:
        max_age = min(max_age, expires - int(now))
    max_age = max(max_age, 0)
    content_type = CONTENT_TYPES[video.format] if variant == "video" else CONTENT_TYPES["jpeg"]
    disposition = f'inline; filename="{video.id}.{variant}.{key.rsplit(".", 1)[-1]}"'
    # S3: the bytes come from the store itself, which answers Range and ETag requests on its own
    url = storage.presign(key, max(min(services.settings.presign_seconds, max_age), 1), content_type=content_type,
                          disposition=disposition)
    if url is not None:
        # the store's egress; a ranged download past the redirect is counted whole (this cannot see the range)
        usage.add_bytes_served(services.store, video.id, info.size)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    # a keyed response must not be shared by a CDN; a signed or open one may be, until the link or file expires
    scope = "private" if services.keys.auth_required() and not signed else "public"
    response = file_response(
        storage, key, size=info.size, request_headers=request.headers,
        etag=f'"{video.id}.{video.output_token}.{variant}"', last_modified=video.completed_at,
        content_type=content_type, cache_control=f"{scope}, max-age={max_age}",
    )
    response.headers["Content-Disposition"] = disposition
    if response.status_code in (200, 206):  # counted when the response starts: egress of what was asked for
        usage.add_bytes_served(services.store, video.id, int(response.headers["content-length"]))
    return response


@router.get("/usage", response_model=UsagePublic, summary="Usage and estimated cost of the caller's videos",
            tags=["usage"])
def get_usage(caller: CallerDep, services: ServicesDep) -> UsagePublic:
    totals = usage.totals(services.store, caller.owner)
    if caller.key is not None:
        totals["limits"] = asdict(caller.limits(services.settings))
        totals["compute_seconds_today"] = compute_today(services.store.engine, caller.key.id, services.keys.clock())
    return UsagePublic(**totals)


@router.get("/models", response_model=ModelList, summary="List the served models", tags=["models"])
async def list_models(models: ModelsDep) -> ModelList:
    return ModelList(data=[ModelPublic.from_spec(spec) for spec in models.values()])


@router.get("/models/{model}", response_model=ModelPublic, responses=errors(404), summary="Retrieve a model",
            tags=["models"])
async def retrieve_model(model: str, models: ModelsDep) -> ModelPublic:
    if model not in models:
        raise APIError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
    return ModelPublic.from_spec(models[model])


def _storage_unavailable(e: Exception) -> APIError:
    log.warning("the object store is unreachable: %s: %s", type(e).__name__, e)
    return APIError(503, "The file store is unavailable; retry shortly.", code="storage_unavailable",
                    headers={"Retry-After": "1"})


def _check_downloadable(video: Job) -> None:
    if video.status != JobStatus.COMPLETED:
        raise APIError(409, f"Video {video.id} is {video.status}; its content is available once it is completed.",
                       code="video_not_completed")
    if video.files_deleted:
        raise APIError(404, f"The files of video {video.id} expired and were deleted.", code="video_expired")
