"""Per-stage seconds of one job, for the capacity planner, from what the service measured.

Every finished video carries `timings` (seconds per stage, recorded by the
worker). A replica's service time is the sum of the stages a job occupies it
for: the queue wait is not service (the planner computes waiting itself) and
the model loads once per replica, not once per job, so both are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

NOT_SERVICE = ("queue_wait", "model_load")


def service_stages(timings: dict[str, float]) -> dict[str, float]:
    """A job's timings without the stages that do not occupy a replica per job."""
    return {stage: float(s) for stage, s in timings.items() if stage not in NOT_SERVICE}


def mean_timings(jobs: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean seconds per stage over jobs (a stage a job lacks counts as 0 for it)."""
    jobs = [service_stages(t) for t in jobs]
    if not jobs:
        raise ValueError("no completed job with timings to plan from")
    stages = sorted({stage for t in jobs for stage in t})
    return {stage: sum(t.get(stage, 0.0) for t in jobs) / len(jobs) for stage in stages}


def timings_from_json(document: object) -> dict[str, float]:
    """Stage seconds from JSON: {stage: seconds}, a video object, or a list object (mean of its completed videos)."""
    if isinstance(document, dict) and document.get("object") == "list":
        videos = [v for v in document.get("data", []) if v.get("status") == "completed" and v.get("timings")]
        return mean_timings(v["timings"] for v in videos)
    if isinstance(document, dict) and document.get("object") == "video":
        if not document.get("timings"):
            raise ValueError(f"video {document.get('id')} has no timings (status {document.get('status')})")
        return mean_timings([document["timings"]])
    if isinstance(document, dict) and document and all(isinstance(v, (int, float)) for v in document.values()):
        return mean_timings([document])
    raise ValueError("expected {stage: seconds}, a video object or a list of videos from GET /v1/videos")


def timings_from_file(path: str | Path) -> dict[str, float]:
    try:
        document = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    return timings_from_json(document)


def timings_from_store(database_url: str, limit: int = 100) -> dict[str, float]:
    """Mean stage seconds of the `limit` most recently finished completed jobs in a job store (read only)."""
    from sqlalchemy import create_engine, select

    from reelgen.service.jobs.models import Job
    from reelgen.service.jobs.states import JobStatus

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Job.timings).where(Job.status == JobStatus.COMPLETED)
                                .order_by(Job.completed_at.desc()).limit(limit)).scalars().all()
    finally:
        engine.dispose()
    return mean_timings(t for t in rows if t)
