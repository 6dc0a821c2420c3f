"""The Ray executor: a dispatcher in the service process sends jobs to replica actors on a Ray cluster.

Why actors and not Ray Serve: the job store already is the queue, with leases, fencing and attempts, and
the API already answers requests by queueing jobs; Serve would add a second queue and a second request
path in front of the same work. So the service claims a job only when a replica has a free slot, sends it
to the least busy one, and learns of a replica's death from the call itself, re-queueing its job at once.

Threads of the service process: the dispatcher (scale, then claim and dispatch), one per running job
(waits for the actor's answer) and the health checker (pings every replica). The service process
imports no torch: replicas build their models inside Ray workers, and the model specs the API validates
against come from a Ray task.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import ray
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from ray.actor import ActorHandle
from ray.exceptions import RayActorError
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from reelgen.backends.base import ModelSpec
from reelgen.scaling.autoscale import ClusterState, ScalingPolicy, desired_replicas
from reelgen.service.executors.generators import build_generators
from reelgen.service.executors.ray_replica import Replica
from reelgen.service.health import LOAD_FAILED, LOADED, NOT_LOADED
from reelgen.service.jobs import Job, JobStatus, JobStore
from reelgen.service.logs import job_context
from reelgen.service.metrics import ServiceMetrics
from reelgen.service.settings import ServiceSettings

log = logging.getLogger(__name__)

_RECENT_JOBS = 20  # completed jobs whose duration estimates seconds_per_job


@dataclass
class _Replica:
    name: str
    actor: ActorHandle
    started_at: float
    ready: bool = False  # models loaded, taking jobs
    node_id: str = ""
    host: str = ""
    pid: int = 0
    running: dict[str, int] = field(default_factory=dict)  # job id -> lease token
    last_dispatch: float = -math.inf

    def where(self) -> str:
        return f"replica {self.name} on node {self.node_id[:12]} (host {self.host}, pid {self.pid})"


class RayExecutor:
    def __init__(self, settings: ServiceSettings, store: JobStore, metrics: ServiceMetrics | None = None):
        self.policy = ScalingPolicy(min_replicas=settings.min_replicas, max_replicas=settings.max_replicas,
                                    target_latency_s=settings.target_latency_seconds,
                                    jobs_per_replica=settings.jobs_per_replica,
                                    scale_up_cooldown_s=settings.scale_up_cooldown_seconds,
                                    scale_down_cooldown_s=settings.scale_down_cooldown_seconds)
        self.settings, self.store = settings, store
        self.metrics = metrics or ServiceMetrics()
        # A driver's logs stay in this process's format; replicas log to Ray's session logs (`ray logs`).
        ray.init(address=settings.ray_address or None, namespace="reelgen", log_to_driver=False,
                 configure_logging=False)
        self._settings = ray.put(_portable(settings))
        self.model_specs: list[ModelSpec] = ray.get(_model_specs.remote(self._settings))
        # what /readyz reports: loaded once a replica has loaded it, load_failed when the last start failed
        self.model_states = {spec.id: NOT_LOADED for spec in self.model_specs}
        self._prefix = f"ray-{uuid.uuid4().hex[:6]}"  # replica names, and so lease owners, of this process
        self._ids = itertools.count(1)
        self._replicas: dict[str, _Replica] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._job_seconds: deque[float] = deque(maxlen=_RECENT_JOBS)
        self._deaths: dict[str, int] = {}  # job id -> replicas that died running it
        self._last_scale = -math.inf
        self._last_start_failure = -math.inf
        self._threads = [threading.Thread(target=self._dispatch_loop, name="reelgen-ray-dispatcher", daemon=True),
                         threading.Thread(target=self._health_loop, name="reelgen-ray-health", daemon=True)]
        self.metrics.registry.register(_ReplicaCollector(self))

    # --- the Executor protocol ---

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, grace_seconds: float) -> None:
        self._stopping.set()
        self._wakeup.set()
        for thread in self._threads:
            thread.join()
        if not self._wait_idle(grace_seconds):
            log.info("jobs still running after %.0fs: stopping them and re-queueing", grace_seconds)
            for replica in self.replicas():
                replica.actor.abort.remote()
            self._wait_idle(self.settings.lease_seconds)  # within a step; past this, leases lapse anyway
        for replica in self.replicas():
            ray.kill(replica.actor)
        ray.shutdown()

    # --- what the service and tests can see ---

    def replicas(self) -> list[_Replica]:
        with self._lock:
            return list(self._replicas.values())

    def seconds_per_job(self) -> float:
        """The mean of recent completed jobs, dispatch to answer; the configured estimate before any."""
        recent = list(self._job_seconds)
        return sum(recent) / len(recent) if recent else self.settings.seconds_per_job

    # --- the dispatcher ---

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._scale()
                self._dispatch()
            except Exception:  # the database or the cluster may come back; the dispatcher must not die of it
                log.exception("a dispatcher round failed")
            self._wakeup.wait(self.settings.poll_seconds)
            self._wakeup.clear()

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                free = [r for r in self._replicas.values()
                        if r.ready and len(r.running) < self.policy.jobs_per_replica]
            if not free:
                return
            # least busy, then least recently used: bursts spread over replicas (and so over nodes)
            replica = min(free, key=lambda r: (len(r.running), r.last_dispatch))
            job = self.store.claim(replica.name, models=self.model_states.keys())
            if job is None:
                return
            with self._lock:
                replica.running[job.id] = job.lease_token
                replica.last_dispatch = time.monotonic()
            with job_context(job.id):
                log.info("%s runs %s (attempt %d)", replica.where(), job.id, job.attempts)
            reply = replica.actor.run.remote(job.id, job.lease_token)
            threading.Thread(target=self._await_job, args=(replica, job.id, job.lease_token, reply),
                             name=f"reelgen-ray-{job.id}", daemon=True).start()

    def _await_job(self, replica: _Replica, job_id: str, token: int, reply: ray.ObjectRef) -> None:
        start = time.monotonic()
        with job_context(job_id):
            try:
                ray.get(reply)
            except RayActorError as e:  # its process died (SIGKILL, out of memory, node lost) mid-job
                self._remove(replica, f"died running {job_id}: {type(e).__name__}")
                self._requeue(job_id, token)
            except Exception:  # the runner itself failed (the database, say): the lease lapses, the job is retried
                log.exception("%s failed to run %s", replica.where(), job_id)
            else:
                self._finished(job_id, token, time.monotonic() - start)
            finally:
                with self._lock:
                    replica.running.pop(job_id, None)
                self._wakeup.set()

    def _finished(self, job_id: str, token: int, seconds: float) -> None:
        job = self.store.get(job_id)
        self._deaths.pop(job_id, None)
        if job is None:
            return  # deleted while it ran
        if job.status == JobStatus.COMPLETED and job.output_token == token:
            self._job_seconds.append(seconds)
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            # the replica's own metrics are not scraped: its stage timings are counted here, from the record
            self.metrics.job_finished(str(job.status), job.timings or {})
        log.info("%s: %s after %.2fs", job_id, job.status, seconds)

    def _requeue(self, job_id: str, token: int) -> None:
        """Back to the queue now, not at lease expiry; a job that keeps killing replicas fails instead."""
        deaths = self._deaths[job_id] = self._deaths.get(job_id, 0) + 1
        if deaths >= self.store.max_attempts:
            self._deaths.pop(job_id)
            if self.store.fail(job_id, token, "replica_died", f"the replica running this video died {deaths} "
                               "time(s); giving up", {}):
                log.warning("%s failed: %d replicas died running it", job_id, deaths)
        elif self.store.release(job_id, token):
            log.warning("re-queued %s: its replica died", job_id)

    # --- scaling ---

    def _scale(self) -> None:
        now = time.monotonic()
        replicas = self.replicas()
        if now - self._last_start_failure < self.policy.scale_up_cooldown_s:
            return  # models failed to load a moment ago: do not start replicas in a loop
        if len(replicas) < self.policy.min_replicas:  # replacing dead ones needs no cooldown
            self._start(self.policy.min_replicas - len(replicas), f"{len(replicas)} replicas, below the minimum")
            return
        queued, oldest = self._queue()
        state = ClusterState(queued=queued, oldest_queued_age_s=oldest,
                             running=sum(len(r.running) for r in replicas), replicas=len(replicas),
                             idle_replicas=sum(not r.running for r in replicas),
                             seconds_per_job=self.seconds_per_job(), since_last_scale_s=now - self._last_scale)
        decision = desired_replicas(state, self.policy)
        if decision.replicas > len(replicas):
            self._start(decision.replicas - len(replicas), decision.reason)
        elif decision.replicas < len(replicas):
            # only idle replicas go (the policy never asks for fewer); starting ones first, they serve nobody yet
            idle = sorted((r for r in replicas if not r.running), key=lambda r: (r.ready, -r.started_at))
            for replica in idle[:len(replicas) - decision.replicas]:
                self._remove(replica, f"scaled down: {decision.reason}", expected=True)
            self._last_scale = now

    def _queue(self) -> tuple[int, float]:
        """Queued jobs of the models served here, and the oldest one's age in seconds."""
        with Session(self.store.engine) as session:
            count, oldest = session.execute(
                select(func.count(), func.min(Job.created_at))
                .where(Job.status == JobStatus.QUEUED, Job.model.in_(self.model_states.keys())),
            ).one()
        return count, (self.store.clock() - oldest if count else 0.0)

    def _start(self, count: int, reason: str) -> None:
        settings = self.settings
        for _ in range(count):
            name = f"{self._prefix}-{next(self._ids)}"
            # SPREAD: replicas go to different nodes while there are some, so one node's loss costs one replica
            actor = _ReplicaActor.options(num_cpus=settings.ray_num_cpus, num_gpus=settings.ray_num_gpus,
                                          resources=settings.ray_resources or None,
                                          max_concurrency=self.policy.jobs_per_replica + 2,  # + ping, abort
                                          scheduling_strategy="SPREAD").remote(self._settings, name)
            replica = _Replica(name, actor, started_at=time.monotonic())
            with self._lock:
                self._replicas[name] = replica
            threading.Thread(target=self._await_ready, args=(replica,), name=f"reelgen-ray-start-{name}",
                             daemon=True).start()
        self._last_scale = time.monotonic()
        log.info("starting %d replica(s), %d in all: %s", count, len(self.replicas()), reason)

    def _await_ready(self, replica: _Replica) -> None:
        # no deadline: a replica may wait for resources the cluster does not have yet (the Ray autoscaler
        # or KubeRay adds a node for it); a replica that cannot load its models fails here instead
        try:
            info = ray.get(replica.actor.info.remote())
        except Exception as e:
            with self._lock:
                removed = replica.name not in self._replicas
            if not removed:  # a failure, not a replica scaled down while it started
                log.error("replica %s failed to start: %s", replica.name, e)
                self._last_start_failure = time.monotonic()
                self.model_states.update(dict.fromkeys(self.model_states, LOAD_FAILED))
                self._remove(replica, "failed to start")
            return
        with self._lock:
            replica.node_id, replica.host, replica.pid = info["node_id"], info["host"], info["pid"]
            replica.ready = True
        self.model_states.update(dict.fromkeys(self.model_states, LOADED))
        log.info("%s ready after %.1fs", replica.where(), time.monotonic() - replica.started_at)
        self._wakeup.set()

    def _remove(self, replica: _Replica, why: str, expected: bool = False) -> None:
        with self._lock:
            if self._replicas.pop(replica.name, None) is None:
                return  # another thread got there first
        (log.info if expected else log.warning)("%s removed: %s", replica.where(), why)
        ray.kill(replica.actor)  # certain death: a stale replica's writes are fenced, but it should not run on
        self._wakeup.set()

    # --- health ---

    def _health_loop(self) -> None:
        interval = self.settings.health_check_seconds
        while not self._stopping.wait(interval):
            ready = [r for r in self.replicas() if r.ready]
            pings = {r.actor.ping.remote(): r for r in ready}
            if not pings:
                continue
            done, late = ray.wait(list(pings), num_returns=len(pings), timeout=interval)
            for reply in done:
                try:
                    ray.get(reply)
                except Exception as e:
                    self._remove(pings[reply], f"failed its health check: {type(e).__name__}")
            for reply in late:
                self._remove(pings[reply], f"did not answer a ping within {interval:.0f}s")

    def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while any(r.running for r in self.replicas()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class _ReplicaCollector(Collector):
    """Replica counts for /metrics, read at scrape time."""

    def __init__(self, executor: RayExecutor):
        self.executor = executor

    def collect(self):
        replicas = self.executor.replicas()
        gauge = GaugeMetricFamily("reelgen_ray_replicas", "Ray replicas by state: starting (loading its models), "
                                  "idle, busy (running a job)", labels=["state"])
        for state in ("starting", "idle", "busy"):
            gauge.add_metric([state], sum(_state(r) == state for r in replicas))
        yield gauge
        yield GaugeMetricFamily("reelgen_ray_seconds_per_job", "The job time autoscaling assumes: mean of recent "
                                "completed jobs, or the configured estimate", value=self.executor.seconds_per_job())


def _state(replica: _Replica) -> str:
    return "starting" if not replica.ready else "busy" if replica.running else "idle"


def _portable(settings: ServiceSettings) -> ServiceSettings:
    """Replicas run in other processes and working directories: local paths become absolute."""
    updates = {}
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not os.path.isabs(url.database):
        updates["database_url"] = url.set(database=os.path.abspath(url.database)).render_as_string(False)
    if "://" not in settings.storage_url:
        updates["storage_url"] = os.path.abspath(settings.storage_url)
    for name in ("model_dir", "models_file"):
        if getattr(settings, name) is not None:
            updates[name] = getattr(settings, name).resolve()
    return settings.model_copy(update=updates)


def _specs(settings: ServiceSettings) -> list[ModelSpec]:
    return [generator.spec for generator in build_generators(settings)]


_ReplicaActor = ray.remote(Replica)
_model_specs = ray.remote(num_cpus=0)(_specs)  # reads model configs only: no CPU reserved
