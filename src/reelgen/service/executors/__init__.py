"""Executors take queued jobs from the store and run them: local threads, or Ray actors (executors.ray)."""

from reelgen.service.executors.base import Executor
from reelgen.service.executors.local import LocalExecutor
from reelgen.service.executors.runner import JobRunner

__all__ = ["Executor", "JobRunner", "LocalExecutor"]
