"""The object store behind fsspec: a local folder by default, any fsspec URL (s3://, memory://) by configuration.

Keys are built here from job ids and attempt numbers alone, never from user text. Each
attempt writes under its own prefix and the job record names the attempt that won, so a
retried job can never mix files of two attempts; no reader ever sees half a file (a folder
gets a temporary name and a rename, S3 a single PUT, which is all-or-nothing), and every
write is read back and its size checked before it counts as stored.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec

from reelgen.service.settings import ServiceSettings

log = logging.getLogger(__name__)

_S3 = {"s3", "s3a"}

# variant -> file name under an attempt's prefix; the video's extension is its container format
VARIANTS = ("video", "thumbnail", "spritesheet")
_FILE_NAMES = {"video": "video.{format}", "thumbnail": "thumbnail.jpg", "spritesheet": "spritesheet.jpg"}


def job_prefix(job_id: str) -> str:
    """Everything of one job: its input image and the outputs of each attempt."""
    return f"videos/{job_id}"


def input_key(job_id: str) -> str:
    """The first frame an image-to-video job was given, as uploaded (PNG, JPEG or WebP)."""
    return f"{job_prefix(job_id)}/input"


def attempts_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/attempts"


def attempt_prefix(job_id: str, token: int) -> str:
    return f"{attempts_prefix(job_id)}/{token}"


def output_key(job_id: str, token: int, variant: str, video_format: str) -> str:
    return f"{attempt_prefix(job_id, token)}/{_FILE_NAMES[variant].format(format=video_format)}"


@dataclass(frozen=True)
class ObjectInfo:
    size: int


class StorageUnavailable(Exception):
    """Writing kept failing until the retry time ran out (or the attempt was stopped): the store is down or
    refuses writes. The job may succeed later; nothing of this write counts as stored."""


def storage_options(url: str, endpoint_url: str = "") -> dict[str, Any]:
    """fsspec options for `url`: for s3://, the endpoint and botocore's signing and retry configuration."""
    if fsspec.utils.get_protocol(url) not in _S3:
        return {}
    return {
        "endpoint_url": endpoint_url or None,  # None: botocore reads AWS_ENDPOINT_URL(_S3) or goes to AWS
        # several processes write (API, workers, Ray replicas): a cached listing would hide their objects
        "use_listings_cache": False,
        # SigV4 URLs work in every AWS region and on MinIO; two tries per request, since storing is retried
        # with backoff above this and /readyz must answer quickly while the store is down
        "config_kwargs": {"signature_version": "s3v4", "retries": {"mode": "standard", "max_attempts": 2}},
    }


class ObjectStore:
    def __init__(self, url: str, *, endpoint_url: str = "", retry_seconds: float = 0.0):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options(url, endpoint_url))
        self.is_s3 = fsspec.utils.get_protocol(url) in _S3
        self.retry_seconds = retry_seconds  # how long put_retrying retries through an outage
        if not self.is_s3:  # a bucket is made by its owner, with its policies; a folder is made here
            self.fs.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ObjectStore:
        return cls(settings.storage_url, endpoint_url=settings.storage_endpoint_url,
                   retry_seconds=settings.storage_retry_seconds)

    def put(self, key: str, data: bytes) -> None:
        """Write all of `data` under `key`, or nothing: readers see the old state or the whole new file.

        Returns only once the stored object reads back with the size written.
        """
        path = self._path(key)
        if self.is_s3:
            self.fs.pipe_file(path, data)  # one PUT (a multipart upload past 5 GiB): whole or nothing
        else:
            self._put_by_rename(path, data)
        stored = self.info(key)
        if stored is None or stored.size != len(data):
            raise OSError(f"{key} reads back as {stored.size if stored else 'missing'} after {len(data)} bytes "
                          "were written")

    def put_retrying(self, key: str, data: bytes, stop: threading.Event) -> None:
        """`put`, retried with doubling delays for up to `retry_seconds`; StorageUnavailable when that time is
        spent or `stop` is set first."""
        deadline, delay = time.monotonic() + self.retry_seconds, 0.2
        while True:
            try:
                return self.put(key, data)
            except Exception as e:
                reason = f"storing {key} in {self.url} failed: {type(e).__name__}: {e}"
                if time.monotonic() + delay > deadline or stop.wait(delay):
                    raise StorageUnavailable(reason) from e
                log.warning("%s; retrying in %.1fs", reason, delay)
                delay = min(2 * delay, 5.0)

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def open(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb")

    def info(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(size=int(self.fs.info(self._path(key))["size"]))
        except FileNotFoundError:
            return None

    def presign(self, key: str, seconds: int, *, content_type: str, disposition: str) -> str | None:
        """A URL that downloads `key` straight from the store for `seconds`, answered with these headers; None
        where the store cannot sign URLs (a folder: the service streams the file itself)."""
        if not self.is_s3:
            return None
        return self.fs.sign(self._path(key), expiration=seconds, ResponseContentType=content_type,
                            ResponseContentDisposition=disposition)

    def children(self, prefix: str) -> list[str]:
        """Keys directly under `prefix` (no error if there are none)."""
        path = self._path(prefix)
        if not self.fs.exists(path):
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(p.removeprefix(root) for p in self.fs.ls(path, detail=False))

    def delete(self, prefix: str) -> None:
        """Remove a key or everything under a prefix; nothing there is not an error."""
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def _put_by_rename(self, path: str, data: bytes) -> None:
        partial = f"{path}.partial-{uuid.uuid4().hex}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            self.fs.pipe_file(partial, data)
            self.fs.mv(partial, path)
        except BaseException:
            if self.fs.exists(partial):
                self.fs.rm(partial)
            raise

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"
