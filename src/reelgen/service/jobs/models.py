"""The jobs table. Times are unix seconds as floats: portable across SQLite and PostgreSQL, and sortable."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from reelgen.service.jobs.states import JobStatus


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float]
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)

    # what to make: the API's fields, resolved against the model's spec when the job was accepted
    model: Mapped[str] = mapped_column(String(128))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[str] = mapped_column(String(16))  # "WxH" as asked; the video is upscaled to it
    seconds: Mapped[str] = mapped_column(String(8))
    frames: Mapped[int]  # native frames for `seconds`
    steps: Mapped[int]
    guidance_scale: Mapped[float]
    sampler: Mapped[str] = mapped_column(String(32))
    fps: Mapped[int]
    format: Mapped[str] = mapped_column(String(8))  # container of the video variant: mp4, webm or gif
    has_image: Mapped[bool] = mapped_column(default=False)  # a first frame waits in storage (image-to-video)
    remixed_from_video_id: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))  # the API key's id; None if made while auth was off

    # progress and the lease a worker holds while it runs the job
    progress: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)  # claims that counted against max_attempts
    lease_token: Mapped[int] = mapped_column(default=0)  # fencing token: +1 on every claim
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None]
    started_at: Mapped[float | None]  # first claim, for queue_wait

    # the outcome
    completed_at: Mapped[float | None]  # when the job reached any terminal state
    expires_at: Mapped[float | None]  # completed_at + retention: files are swept after this
    output_token: Mapped[int | None]  # lease_token of the attempt whose files are the result
    files_deleted: Mapped[bool] = mapped_column(default=False)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # seconds per stage
    # cost accounting (service/usage.py): what the finishing attempt used, with the prices it was charged at;
    # bytes served is its own column so concurrent downloads add to it atomically
    usage: Mapped[dict | None] = mapped_column(JSON)
    bytes_served: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),  # claim: oldest queued first
        Index("ix_jobs_created_id", "created_at", "id"),  # list: stable cursor order
        Index("ix_jobs_expires", "expires_at"),  # retention sweep
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),  # a key's list and its active jobs
    )
