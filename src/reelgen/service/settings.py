"""Service configuration: every knob has a default and a REELGEN_* environment variable."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, NonNegativeFloat, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _json_object(value: object) -> object:
    # a --flag gives the dict as a JSON string; the environment is decoded by pydantic-settings already
    return json.loads(value) if isinstance(value, str) else value


def _word_list(value: object) -> object:
    # JSON from the environment, or "a,b" from the environment or a --flag
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [word.strip() for word in value.split(",") if word.strip()]
    return value


class ServiceSettings(BaseSettings):
    """Settings of one `reelgen serve` process; `reelgen serve` flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="REELGEN_", extra="forbid")

    data_dir: Path = Field(Path("reelgen-data"), description="where the default database and files live")
    database_url: str = Field("", description="SQLAlchemy URL of the job store; default: SQLite in data_dir")
    storage_url: str = Field("", description="fsspec URL of the object store, e.g. s3://bucket/prefix; default: "
                                             "data_dir/files")
    # s3:// credentials and region come from the usual AWS_* variables (or ~/.aws), read by botocore itself
    storage_endpoint_url: str = Field("", description="endpoint of an S3-compatible store (MinIO, Ceph, R2...) for "
                                                      "s3:// storage; default: AWS_ENDPOINT_URL, else AWS")
    presign_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600,
                                 description="s3:// storage: downloads redirect to a presigned URL valid this long "
                                             "(at most 7 days, S3's limit)")
    storage_retry_seconds: float = Field(60.0, ge=0, description="storing a finished video is retried through an "
                                                                 "object store outage this long; then the job is "
                                                                 "re-queued, or fails after max_attempts")
    model_dir: Path | None = Field(None, description="a reelgen model folder; default: the built-in model")
    models_file: Path | None = Field(None, description="a models.toml naming every model to serve (built-in or "
                                                        "diffusers); replaces model_dir")

    workers: int = Field(1, ge=0, description="worker threads generating videos in this process (serve --workers 0: "
                                              "none, `reelgen worker` processes generate)")
    # Batching (local executor): a worker that claims a job also claims compatible queued ones (same model, size,
    # frames, steps, sampler) and denoises them in one batched pass, if the model runs batches (the built-in does).
    batch_size: int = Field(4, ge=1, description="most jobs one worker denoises together in one batched pass "
                                                 "(1: one at a time); the Ray executor runs one at a time")
    batch_wait_ms: float = Field(0.0, ge=0, description="how long a worker holding fewer than batch_size compatible "
                                                        "jobs waits for more to be queued before it starts")

    # The Ray executor (service/executors/ray.py, docs/scaling.md): replicas are Ray actors, min..max of them.
    executor: Literal["local", "ray"] = Field("local", description="local (worker threads in this process) or "
                                                                   "ray (replica actors on a Ray cluster)")
    ray_address: str = Field("", description="Ray cluster to join (the address `ray start --head` prints); "
                                             "empty: start a private one on this machine")
    min_replicas: int = Field(1, ge=0, description="Ray replicas kept up even when idle (0: scale to zero)")
    max_replicas: int = Field(2, ge=1, description="most Ray replicas the autoscaler starts")
    ray_num_cpus: float = Field(1.0, ge=0, description="CPUs each Ray replica reserves on its node")
    ray_num_gpus: float = Field(0.0, ge=0, description="GPUs each Ray replica reserves (and sees) on its node")
    ray_resources: Annotated[dict[str, NonNegativeFloat], BeforeValidator(_json_object)] = Field(
        {}, description="custom Ray resources each replica reserves, as JSON, e.g. {\"A100\": 1}")
    jobs_per_replica: int = Field(1, ge=1, description="jobs one Ray replica runs at once")
    target_latency_seconds: float = Field(60.0, gt=0, description="autoscaling target: a video finishes within "
                                                                  "this long of its submission")
    seconds_per_job: float = Field(30.0, gt=0, description="autoscaling's estimate of one job's time until "
                                                           "jobs have been timed")
    scale_up_cooldown_seconds: float = Field(30.0, ge=0, description="after a scale event, before adding replicas")
    scale_down_cooldown_seconds: float = Field(300.0, ge=0, description="after a scale event, before removing "
                                                                        "idle replicas")
    health_check_seconds: float = Field(5.0, gt=0, description="how often each Ray replica is pinged; one that "
                                                               "does not answer within this long is replaced")
    lease_seconds: float = Field(30.0, gt=0, description="a claimed job returns to the queue after this long "
                                                          "without a heartbeat")
    max_attempts: int = Field(3, ge=1, description="claims of one job before it fails for good")
    poll_seconds: float = Field(1.0, gt=0, description="how often an idle worker looks for queued jobs")
    housekeeping_seconds: float = Field(10.0, gt=0, description="how often expired leases and files are swept")
    shutdown_grace_seconds: float = Field(20.0, ge=0, description="on SIGTERM, running jobs get this long to finish "
                                                                  "before they are re-queued")
    retention_hours: float = Field(24.0, gt=0, description="files of finished videos are deleted this long "
                                                           "after they finish")

    api_keys: list[str] = Field(default_factory=list, description="secrets registered as API keys at start, "
                                                                  "besides those of `reelgen keys create`; "
                                                                  "one removed from here is revoked")
    # Limits of every API key that `reelgen keys create` did not set its own of; 0 is no limit.
    requests_per_minute: int = Field(600, ge=0, description="requests one API key may make per minute (0: no limit)")
    max_concurrent_jobs: int = Field(16, ge=0, description="videos one API key may have queued or in progress (0: no "
                                                                                "limit)")
    daily_compute_seconds: float = Field(14400.0, ge=0, description="device seconds of generation one API key "
                                                                    "may use per UTC day (0: no limit)")
    # A random secret still works, but links then die with the process: set one to keep them across restarts.
    signing_secret: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
                                      description="HMAC key of signed download links")
    max_link_seconds: int = Field(7 * 24 * 3600, ge=1, description="longest lifetime of a signed download link")
    max_upload_bytes: int = Field(10 * 2**20, ge=1, description="largest accepted request body")

    # Cost estimates (GET /v1/usage): defaults are rough public-cloud list prices in USD, set your own.
    device_prices_per_hour: Annotated[dict[str, NonNegativeFloat], BeforeValidator(_json_object)] = Field(
        {"cpu": 0.05, "cuda": 2.00},
        description="$ per hour of generation by device kind, as JSON; a kind not named costs 0")
    storage_price_per_gb_month: float = Field(0.023, ge=0, description="$ per GB-month of stored video files")
    egress_price_per_gb: float = Field(0.09, ge=0, description="$ per GB of downloaded video files")

    # Webhooks (service/webhooks): a video's terminal event goes to its request's webhook_url, else to this one.
    webhook_url: str = Field("", description="http(s) URL receiving every video's video.completed / failed / "
                                             "cancelled event; a request's webhook_url takes its place")
    webhook_secret: SecretStr | None = Field(None, description="whsec_<base64> secret signing webhooks "
                                                               "(Standard Webhooks); needed for any webhook")
    webhook_allow_hosts: Annotated[list[str], NoDecode, BeforeValidator(_word_list)] = Field(
        [], description="host names, IPs or CIDRs webhooks may reach although they are not "
                                          "public (loopback, private, link-local...), comma-separated or JSON")
    image_allow_hosts: Annotated[list[str], NoDecode, BeforeValidator(_word_list)] = Field(
        [], description="host names, IPs or CIDRs an input_reference image_url may be fetched from although "
                        "they are not public (an in-house image server), comma-separated or JSON")
    webhook_max_attempts: int = Field(8, ge=1, description="attempts per webhook before it is given up")
    webhook_backoff_seconds: float = Field(60.0, gt=0, description="delay after a failed first attempt; each "
                                                                   "next delay is 3x longer, +-20% jitter")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="time a receiver has to answer one attempt")
    webhook_poll_seconds: float = Field(1.0, gt=0, description="how often finished videos and due webhooks "
                                                               "are looked for")

    log_format: Literal["json", "text"] | None = Field(None, description="json (one object per line) or text; "
                                                                          "default: json unless stderr is a TTY")

    @model_validator(mode="after")
    def _default_locations(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'jobs.db'}"
        if not self.storage_url:
            self.storage_url = str(self.data_dir / "files")
        return self

    @property
    def heartbeat_seconds(self) -> float:
        # Three beats per lease: one late beat never costs a job its lease.
        return self.lease_seconds / 3

    @property
    def retention_seconds(self) -> float:
        return self.retention_hours * 3600
