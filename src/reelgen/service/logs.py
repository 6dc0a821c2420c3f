"""Service logs: one JSON object per line (or text for a terminal), each line about a job carrying its id.

The job id travels in a context variable that the runner (worker threads) and the API (requests naming a
video) set, so no log call has to pass it along.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

job_id_var: ContextVar[str | None] = ContextVar("reelgen_job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every log line inside carries `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


class JsonFormatter(logging.Formatter):
    """timestamp (UTC, ISO 8601), level, logger, message, job_id when known, exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = _job_id(record)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = _job_id(record)
        return text if job_id is None else f"{text} [{job_id}]"


def configure(level: str, fmt: str | None, stream: TextIO | None = None) -> None:
    """Route every logger (uvicorn's too) to `stream` in `fmt`; None: json unless the stream is a terminal."""
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python warnings too, so every line of the stream parses


def _job_id(record: logging.LogRecord) -> str | None:
    # `extra={"job_id": ...}` wins, for lines about a job logged outside its context
    return getattr(record, "job_id", None) or job_id_var.get()
