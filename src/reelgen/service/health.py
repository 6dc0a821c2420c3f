"""Readiness checks: can this process take a request and finish a job right now?

Ready means all three of:
- database: the job store answers `SELECT 1`;
- storage: a probe object can be written, read back unchanged and deleted;
- models: at least one served model is loaded (a job in this process loaded its weights) or loadable (its
  generator was built at start: configuration read, device and dtype checked; weights load at the first
  job), and not every model failed its last load.
Liveness (/healthz) asks none of this: the process answers, so restarting it would not help.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import text

from reelgen.service.jobs import JobStore
from reelgen.service.storage import ObjectStore

PROBE_PREFIX = "_probes"  # outside videos/: retention sweeps and job deletes never touch it

# model states a runner reports (JobRunner.model_states)
NOT_LOADED, LOADED, LOAD_FAILED = "not_loaded", "loaded", "load_failed"


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    seconds: float


def check_database(store: JobStore) -> str:
    with store.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return "SELECT 1 answered"


def check_storage(storage: ObjectStore) -> str:
    key, data = f"{PROBE_PREFIX}/readyz-{uuid.uuid4().hex}", uuid.uuid4().bytes
    try:
        storage.put(key, data)
        if storage.get(key) != data:
            raise OSError("the probe object read back differs from what was written")
    finally:
        storage.delete(key)
    return "probe object written, read back and deleted"


def check_models(states: Mapping[str, str]) -> str:
    usable = [model for model, state in states.items() if state != LOAD_FAILED]
    if not usable:
        raise RuntimeError("no model is served here" if not states else
                           f"every model failed to load: {', '.join(states)}")
    return ", ".join(f"{model}: {state}" for model, state in states.items())


def readiness(store: JobStore, storage: ObjectStore, model_states: Mapping[str, str]) -> tuple[bool, dict[str, Check]]:
    checks = {"database": _timed(lambda: check_database(store)), "storage": _timed(lambda: check_storage(storage)),
              "models": _timed(lambda: check_models(model_states))}
    return all(check.ok for check in checks.values()), checks


def _timed(check: Callable[[], str]) -> Check:
    start = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as e:  # any failure is the answer, not an error of the probe
        detail, ok = f"{type(e).__name__}: {e}", False
    return Check(ok=ok, detail=detail, seconds=time.perf_counter() - start)
