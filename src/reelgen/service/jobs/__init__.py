"""Durable jobs: the states a video goes through and the SQLAlchemy store that leases them to workers."""

from reelgen.service.jobs.models import Job
from reelgen.service.jobs.states import ACTIVE, TERMINAL, JobStatus
from reelgen.service.jobs.store import JobConflict, JobStore

__all__ = ["ACTIVE", "TERMINAL", "Job", "JobConflict", "JobStatus", "JobStore"]
