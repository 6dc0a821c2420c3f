"""The autoscaling policy: queue depth and the oldest job's age against a latency target -> replicas.

A pure function of what the service can observe, so it is tested with worked
examples and carried out by whatever runs the replicas (Ray actors here, the
Ray autoscaler or KubeRay on a real cluster).

The rule. A job should finish within `target_latency_s` of submission, so it
may wait at most budget = target - seconds_per_job for a replica, less what
the oldest queued job has already waited. In that time a free job slot starts
s + 1 jobs (at 0, spj, ..., s*spj with s = floor(budget / spj)), and a busy one
s jobs (it may first need a whole spj to finish its current job). So n replicas
of k slots start n*k*(s + 1) - running jobs in time, and the queue needs

    n = ceil((queued + running) / (k * (s + 1)))

When a job alone takes longer than the target, or the oldest job is already
past its budget, s = 0: every job gets a slot now, up to max_replicas.
Scale-up waits out a short cooldown (a new replica needs time to load its
model, and counting starting replicas in `replicas` keeps one burst from being
answered twice); scale-down waits a longer one and removes only idle replicas,
so a running job is never killed. With no replicas and work queued, a replica
starts at once, whatever the cooldown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingPolicy:
    min_replicas: int = 1  # 0 allows scale to zero (the first job then waits for a model to load)
    max_replicas: int = 4  # the cost ceiling
    target_latency_s: float = 60.0  # a job should finish within this of its submission
    jobs_per_replica: int = 1  # jobs one replica runs at once (its batch)
    scale_up_cooldown_s: float = 30.0  # after any scale event, before adding more: new replicas are still loading
    scale_down_cooldown_s: float = 300.0  # after any scale event, before removing: keeps bursts from flapping

    def __post_init__(self):
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                             f"got {self.min_replicas} and {self.max_replicas}")
        if not self.target_latency_s > 0 or self.jobs_per_replica < 1:
            raise ValueError("target_latency_s must be > 0 and jobs_per_replica >= 1")
        if self.scale_up_cooldown_s < 0 or self.scale_down_cooldown_s < 0:
            raise ValueError("cooldowns must be >= 0")


@dataclass(frozen=True)
class ClusterState:
    queued: int  # jobs waiting for a replica
    oldest_queued_age_s: float  # how long the oldest queued job has waited (0 with an empty queue)
    running: int  # jobs being generated now
    replicas: int  # replicas up or starting
    idle_replicas: int  # replicas running no job: the only ones scale-down may remove
    seconds_per_job: float  # measured generation time of one job, e.g. the mean of recent jobs
    since_last_scale_s: float = math.inf  # seconds since the last scale event


@dataclass(frozen=True)
class Decision:
    replicas: int  # what to scale to
    reason: str  # one line for logs and metrics


def needed_replicas(state: ClusterState, policy: ScalingPolicy) -> int:
    """Replicas that start every queued job in time (the rule above), before limits and cooldowns."""
    busy = math.ceil(state.running / policy.jobs_per_replica)
    if state.queued == 0:
        return busy
    budget = policy.target_latency_s - state.seconds_per_job - state.oldest_queued_age_s
    starts = math.floor(max(budget, 0.0) / state.seconds_per_job) + 1  # jobs a free slot starts in time
    return max(busy, math.ceil((state.queued + state.running) / (policy.jobs_per_replica * starts)))


def desired_replicas(state: ClusterState, policy: ScalingPolicy) -> Decision:
    """What to scale to now; never below the replicas busy with jobs."""
    counts = (state.queued, state.running, state.replicas, state.idle_replicas)
    if min(counts) < 0 or state.idle_replicas > state.replicas:
        raise ValueError(f"inconsistent cluster state: {state}")
    if not state.seconds_per_job > 0:
        raise ValueError("seconds_per_job must be > 0 (before any job has run, pass an estimate)")
    need = needed_replicas(state, policy)
    want = min(max(need, policy.min_replicas), policy.max_replicas)
    now = state.replicas

    if want > now:
        if now == 0:
            return Decision(want, f"cold start: {state.queued} queued, no replicas")
        if state.since_last_scale_s < policy.scale_up_cooldown_s:
            return Decision(now, f"scale-up to {want} waits for the cooldown")
        capped = " (max)" if need > policy.max_replicas else ""
        return Decision(want, f"{state.queued} queued, oldest {state.oldest_queued_age_s:.0f} s: "
                              f"{need} replicas meet the {policy.target_latency_s:.0f} s target{capped}")
    if want < now:
        if state.since_last_scale_s < policy.scale_down_cooldown_s:
            return Decision(now, f"scale-down to {want} waits for the cooldown")
        floor = now - state.idle_replicas  # replicas running jobs stay
        if floor >= now:
            return Decision(now, f"scale-down to {want} waits for running jobs to finish")
        target = max(want, floor)
        return Decision(target, f"{now - target} idle replicas not needed")
    return Decision(now, "steady")
