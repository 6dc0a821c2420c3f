"""Request and response bodies: OpenAI's Videos API fields first, reelgen's extensions after them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from reelgen.backends.base import ModelSpec
from reelgen.pipelines.request import MAX_STEPS, SAMPLER_NAMES
from reelgen.service.usage import video_usage
from reelgen.service.jobs import Job

Variant = Literal["video", "thumbnail", "spritesheet"]
VideoFormat = Literal["mp4", "webm", "gif"]
Status = Literal["queued", "in_progress", "completed", "failed", "cancelled"]
# OpenAI sends `seconds` as a string ("4"); clients writing JSON by hand often send a number
Seconds = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]


class ImageReference(BaseModel):
    """A first frame given by reference instead of an upload (OpenAI's ImageInputReferenceParam)."""

    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, description="a URL or a base64 data URL of the image")
    file_id: str | None = Field(None, description="the id of an uploaded file")


class VideoCreate(BaseModel):
    """POST /v1/videos, as JSON or multipart/form-data (where `input_reference` may be an image file)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=10_000, pattern=r"\S", description="what the video shows")
    model: str | None = Field(None, description="a model id from GET /v1/models; default: the first served model")
    seconds: Seconds | None = Field(None, description="clip length; one of the model's `seconds`")
    size: str | None = Field(None, description="'WxH'; one of the model's `sizes`")
    input_reference: ImageReference | None = Field(None, description="a first frame, for image-to-video models")
    # reelgen extensions
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed and settings, same video; "
                                                                     "default: random, reported back")
    negative_prompt: str = Field("", max_length=10_000, description="what the video should not show")
    guidance_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                         description="classifier-free guidance; 1 turns it off")
    num_inference_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="denoising steps")
    sampler: Literal[SAMPLER_NAMES] | None = Field(None, description="the diffusion sampler")
    fps: int | None = Field(None, ge=1, le=120, description="frame rate of the video file; default: the model's")
    format: VideoFormat = Field("mp4", description="container of the `video` variant")
    webhook_url: str | None = Field(None, max_length=2048, description="http(s) URL that receives this video's "
                                    "video.completed / failed / cancelled event, signed as Standard Webhooks")


class RemixCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=10_000, pattern=r"\S",
                        description="the new prompt; every other setting is kept")


class VideoError(BaseModel):
    code: str
    message: str


class UsageCost(BaseModel):
    """Estimated cost in the currency of the configured prices (USD by default)."""

    compute: float = Field(description="device seconds at the device kind's price per hour")
    storage: float = Field(description="bytes stored, for the retention period, at the price per GB-month")
    egress: float = Field(description="bytes downloaded at the price per GB")
    total: float


class VideoUsage(BaseModel):
    compute_seconds: dict[str, float] = Field(description="seconds of generation (model load included) by device "
                                                          "kind: cpu, cuda, ...")
    bytes_stored: int = Field(description="bytes of the video, thumbnail and spritesheet")
    bytes_served: int = Field(description="bytes downloaded from GET .../content")
    estimated_cost: UsageCost


class KeyLimits(BaseModel):
    """An API key's limits (its own, or the service's defaults); 0 is no limit."""

    requests_per_minute: int
    max_concurrent_jobs: int = Field(description="videos queued or in progress at once")
    daily_compute_seconds: float = Field(description="device seconds of generation per UTC day")


class UsagePublic(VideoUsage):
    """GET /v1/usage: usage summed over the videos in the caller's scope."""

    object: Literal["usage"] = "usage"
    scope: str = Field(description="whose videos are summed: the API key's id, or 'global' while auth is off")
    videos: int = Field(description="videos in the store in this scope, in any state")
    # the caller's key: null while auth is off
    limits: KeyLimits | None = None
    compute_seconds_today: float | None = Field(None, description="device seconds charged to the key since 00:00 "
                                                                  "UTC, deleted videos included: what the daily "
                                                                  "quota counts")


class VideoPublic(BaseModel):
    """OpenAI's Video object plus reelgen's extension fields."""

    id: str
    object: Literal["video"] = "video"
    created_at: int
    status: Status
    model: str
    progress: int = Field(ge=0, le=100, description="moves with every denoising step")
    prompt: str
    seconds: str
    size: str
    completed_at: int | None = None
    expires_at: int | None = None
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    # reelgen extensions
    seed: int
    negative_prompt: str
    guidance_scale: float
    num_inference_steps: int
    sampler: str
    fps: int
    format: VideoFormat
    frames: int = Field(description="frames in the video")
    attempts: int = Field(description="times a worker took this job (more than 1 after a crash)")
    timings: dict[str, float] = Field(description="seconds per stage: queue_wait, model_load, encode_text, "
                                                  "denoise, decode, render, store")
    usage: VideoUsage | None = Field(None, description="compute, storage and downloads of the attempt that "
                                                       "finished the video, and their estimated cost")
    batch_size: int | None = Field(None, description="videos denoised together in the batch that made this one "
                                                     "(1: alone); its compute_seconds are its share of the batch")

    @classmethod
    def from_job(cls, job: Job) -> VideoPublic:
        return cls(
            id=job.id, created_at=int(job.created_at), status=job.status, model=job.model, progress=job.progress,
            prompt=job.prompt, seconds=job.seconds, size=job.size, completed_at=_seconds(job.completed_at),
            expires_at=_seconds(job.expires_at), remixed_from_video_id=job.remixed_from_video_id,
            error=VideoError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            seed=job.seed, negative_prompt=job.negative_prompt, guidance_scale=job.guidance_scale,
            num_inference_steps=job.steps, sampler=job.sampler, fps=job.fps, format=job.format, frames=job.frames,
            attempts=job.attempts, timings=job.timings or {}, usage=video_usage(job),
            batch_size=(job.usage or {}).get("batch_size"),
        )


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Variant = "video"
    expires_in: int = Field(3600, ge=1, description="seconds the link stays valid")


class LinkPublic(BaseModel):
    """A signed URL to one file of a video that works without an API key until `expires_at`."""

    object: Literal["video.link"] = "video.link"
    url: str
    variant: Variant
    expires_at: int


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "reelgen"
    # reelgen extensions: what `size` and `seconds` may be, and the defaults
    description: str
    sizes: list[str]
    seconds: list[str]
    default_size: str
    default_seconds: str
    fps: int
    native_size: str = Field(description="'WxH' the model generates before upscaling to `size`")
    default_steps: int
    default_guidance_scale: float
    samplers: list[str] = Field(description="the `sampler` values this model accepts")
    default_sampler: str
    image_to_video: bool

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelPublic:
        width, height = spec.native_size
        return cls(id=spec.id, description=spec.description, sizes=list(spec.sizes), seconds=list(spec.seconds),
                   default_size=spec.default_size, default_seconds=spec.default_seconds, fps=spec.fps,
                   native_size=f"{width}x{height}", default_steps=spec.default_steps,
                   default_guidance_scale=spec.default_guidance_scale, samplers=list(spec.samplers),
                   default_sampler=spec.default_sampler, image_to_video=spec.image_to_video)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class Check(BaseModel):
    ok: bool
    detail: str
    seconds: float


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check] = Field(description="database, storage and models")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


def _seconds(t: float | None) -> int | None:
    return None if t is None else int(t)
