"""The object store behind fsspec: a local folder by default, any fsspec URL (s3://, memory://) by configuration.

Keys are built here from job ids and attempt numbers alone, never from user text. Each
attempt writes under its own prefix and the job record names the attempt that won, so a
retried job can never mix files of two attempts; writes go to a temporary key first and
are moved into place, so no reader ever sees half a file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import BinaryIO

import fsspec

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


class ObjectStore:
    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        """Write all of `data` under `key`, or nothing: readers see the old state or the whole new file."""
        path = self._path(key)
        partial = f"{path}.partial-{uuid.uuid4().hex}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            self.fs.pipe_file(partial, data)
            self.fs.mv(partial, path)
        except BaseException:
            if self.fs.exists(partial):
                self.fs.rm(partial)
            raise

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def open(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb")

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        return ObjectInfo(size=int(self.fs.info(path)["size"]))

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

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"
