"""Cost accounting: what each job used (device seconds, bytes stored, bytes served) and its estimated cost.

A finishing attempt records its usage on the job together with the prices in force, so a later price
change does not rewrite past jobs; egress is priced when read, from the job's recorded egress price.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select, true, update
from sqlalchemy.orm import Session

from reelgen.service.jobs import Job, JobStore
from reelgen.service.tenants import add_compute

GB = 1e9  # cloud price sheets count decimal gigabytes
HOURS_PER_MONTH = 730  # the average month that GB-month prices are billed over
COMPONENTS = ("compute", "storage", "egress")


@dataclass(frozen=True)
class Prices:
    device_per_hour: Mapping[str, float] = field(default_factory=dict)  # by device kind; a kind not named costs 0
    storage_per_gb_month: float = 0.0
    egress_per_gb: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> Prices:
        return cls(dict(settings.device_prices_per_hour), settings.storage_price_per_gb_month,
                   settings.egress_price_per_gb)


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda': prices are per kind of device, not per card."""
    return device.split(":", 1)[0]


def job_usage(device: str, compute_seconds: float, bytes_stored: int, retention_hours: float,
              prices: Prices, batch_size: int = 1) -> dict[str, Any]:
    """The record one attempt leaves on its job: quantities, and the cost of compute and storage at `prices`.

    Storage is charged for the whole retention period up front: the files live exactly that long. A job
    denoised in a batch of `batch_size` is charged its share of the batch's compute seconds.
    """
    kind = device_kind(device)
    return {
        "device": kind,
        "compute_seconds": compute_seconds,
        "bytes_stored": bytes_stored,
        "retention_hours": retention_hours,
        "batch_size": batch_size,
        "egress_price_per_gb": prices.egress_per_gb,
        "cost": {
            "compute": compute_seconds / 3600 * prices.device_per_hour.get(kind, 0.0),
            "storage": bytes_stored / GB * prices.storage_per_gb_month * retention_hours / HOURS_PER_MONTH,
        },
    }


def record(store: JobStore, job_id: str, token: int, usage: dict[str, Any]) -> bool:
    """Store an attempt's usage, and charge its compute to its key's daily quota; fenced by the lease token
    alone, so a cancelled job's compute is still counted, while an attempt that lost its job to a newer one
    records nothing."""
    with Session(store.engine) as session, session.begin():
        recorded = session.execute(
            update(Job).where(Job.id == job_id, Job.lease_token == token).values(usage=usage),
        ).rowcount == 1
        if recorded:
            add_compute(session, job_id, usage["compute_seconds"], store.clock())
        return recorded


def add_bytes_served(store: JobStore, job_id: str, n: int) -> None:
    """Count a download; one UPDATE adds in the database, so concurrent downloads never lose a count."""
    with Session(store.engine) as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(bytes_served=Job.bytes_served + n))


def video_usage(job: Job) -> dict[str, Any] | None:
    """The `usage` extension of a video object; None until an attempt finished."""
    usage = job.usage
    if not usage:
        return None
    served = job.bytes_served or 0
    cost = {"compute": usage["cost"]["compute"], "storage": usage["cost"]["storage"],
            "egress": served / GB * usage["egress_price_per_gb"]}
    return {"compute_seconds": {usage["device"]: usage["compute_seconds"]}, "bytes_stored": usage["bytes_stored"],
            "bytes_served": served, "estimated_cost": {**cost, "total": sum(cost.values())}}


def scope(owner: str | None) -> tuple[str, ColumnElement[bool]]:
    """The usage group a caller sees -> (its name, the jobs in it): an API key's own videos, named by the key's
    id; None (auth off, or the metrics) is every video."""
    return ("global", true()) if owner is None else (owner, Job.owner == owner)


def totals(store: JobStore, owner: str | None) -> dict[str, Any]:
    """Usage summed over the jobs in the scope of `owner` (an API key's id), shaped as a video's usage."""
    name, where = scope(owner)
    usage = Job.usage
    with Session(store.engine) as session:
        count, stored, served, compute, storage, egress = session.execute(
            select(func.count(Job.id), func.sum(usage["bytes_stored"].as_integer()), func.sum(Job.bytes_served),
                   func.sum(usage[("cost", "compute")].as_float()), func.sum(usage[("cost", "storage")].as_float()),
                   func.sum(Job.bytes_served * usage["egress_price_per_gb"].as_float()) / GB).where(where),
        ).one()
        # labelled: PostgreSQL groups by the same bound expression the select names
        device = usage["device"].as_string().label("device")
        seconds = session.execute(
            select(device, func.sum(usage["compute_seconds"].as_float())).where(where, usage["device"].as_string().is_not(None))
            .group_by(device),
        ).all()
    cost = {"compute": compute or 0.0, "storage": storage or 0.0, "egress": egress or 0.0}
    return {"scope": name, "videos": count, "compute_seconds": {kind: total for kind, total in seconds},
            "bytes_stored": stored or 0, "bytes_served": served or 0,
            "estimated_cost": {**cost, "total": sum(cost.values())}}
