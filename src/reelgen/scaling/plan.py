"""Capacity planning: an arrival rate, measured per-stage timings and a latency target -> replicas.

Each replica is a server of an M/M/c queue (Erlang, 1917): jobs arrive at
random (Poisson) at `rate` per second and one takes S = the sum of its stages'
measured seconds. A plan is the fewest replicas c for which the chance that a
job's latency (its wait, from Erlang C, plus S) exceeds the target is at most
1 - percentile:

    P(wait > t) = C(c, a) * exp(-(c / S - rate) * t),   a = rate * S erlangs

M/M/c rather than a bare utilization bound (c >= a / 0.8, say) because the
bound says nothing about waiting: at small c a queue builds long before 80 %,
at large c far later. M/M/c assumes exponential service times; ours are nearly
constant, for which waits are shorter (M/D/c waits about half as long), so the
plan errs towards one replica too many, the safe side of a latency target.
With many replicas and a loose target the queue alone would run them 98 %
busy, where a rate 2 % above the estimate never drains: a utilization cap
(85 % by default) keeps headroom, and each plan says which limit bound it.

Bigger replicas (N devices running one video in parallel) take S(N) less
time on the parallel stage, with S(N) = N / (1 + alpha (N - 1)) and alpha
measured by benchmarks/bench_parallel.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


def speedup(n: int, alpha: float) -> float:
    """S(N) = N / (1 + alpha (N - 1)): alpha = 0 is perfect scaling, alpha = 1 none at all."""
    return n / (1 + alpha * (n - 1))


def fit_alpha(n: int, measured_speedup: float) -> float:
    """The alpha for which S(n) equals a measured speedup (n > 1)."""
    return (n / measured_speedup - 1) / (n - 1)


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits, for `servers` and an offered load of `load` erlangs (< servers)."""
    if not 0 <= load < servers:
        raise ValueError(f"a load of {load:g} erlangs needs more than {servers} servers")
    b = 1.0  # Erlang B by its recursion, stable for thousands of servers
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1 - b))


def latency_quantile(replicas: int, rate: float, seconds_per_job: float, percentile: float) -> float:
    """The `percentile` quantile of a job's latency (wait + service) on an M/M/c queue of `replicas`."""
    c_wait = erlang_c(replicas, rate * seconds_per_job)
    drain = replicas / seconds_per_job - rate  # rate at which the queue empties
    tail = 1 - percentile
    wait = math.log(c_wait / tail) / drain if c_wait > tail else 0.0
    return wait + seconds_per_job


@dataclass(frozen=True)
class ReplicaSize:
    name: str  # e.g. "1 GPU", "2 GPUs, CFG-parallel"
    devices: int  # devices one replica holds
    seconds_per_job: float  # one job, all stages


@dataclass(frozen=True)
class Plan:
    size: ReplicaSize
    replicas: int
    utilization: float  # busy fraction of the replicas
    latency_s: float  # latency at the plan's percentile
    bound: str  # what set the count: "latency" (the queue) or "utilization" (the headroom cap)

    @property
    def devices(self) -> int:
        return self.replicas * self.size.devices


def replica_sizes(stage_seconds: dict[str, float], devices: tuple[int, ...] = (1,), alpha: float = 0.0,
                  parallel_stage: str = "denoise") -> list[ReplicaSize]:
    """A replica of each device count: `parallel_stage` sped up by S(N), the other stages as measured."""
    if parallel_stage not in stage_seconds:
        raise ValueError(f"no {parallel_stage!r} among the stages {sorted(stage_seconds)}")
    rest = sum(s for k, s in stage_seconds.items() if k != parallel_stage)
    return [ReplicaSize(f"{n} device{'s' if n > 1 else ''}", n,
                        rest + stage_seconds[parallel_stage] / speedup(n, alpha)) for n in devices]


def replicas_needed(rate: float, seconds_per_job: float, target_latency_s: float, percentile: float = 0.95) -> int:
    """Fewest replicas whose latency at `percentile` is within the target (M/M/c), with no headroom."""
    if seconds_per_job > target_latency_s:
        raise ValueError(f"one job takes {seconds_per_job:.1f} s, more than the {target_latency_s:g} s target: "
                         "no number of replicas helps; use a faster (bigger) replica")
    if not 0 < percentile < 1 or rate <= 0:
        raise ValueError("need a rate > 0 and a percentile between 0 and 1")
    c = math.floor(rate * seconds_per_job) + 1  # the fewest that keep up at all
    while latency_quantile(c, rate, seconds_per_job, percentile) > target_latency_s:
        c += 1
    return c


def plan_capacity(rate: float, sizes: list[ReplicaSize], target_latency_s: float, percentile: float = 0.95,
                  max_utilization: float = 0.85) -> list[Plan]:
    """A plan per replica size that can meet the target, cheapest (fewest devices) first."""
    if not 0 < max_utilization <= 1:
        raise ValueError(f"max_utilization must be in (0, 1], got {max_utilization}")
    plans = []
    for size in sizes:
        if size.seconds_per_job > target_latency_s:
            continue
        by_latency = replicas_needed(rate, size.seconds_per_job, target_latency_s, percentile)
        by_headroom = math.ceil(rate * size.seconds_per_job / max_utilization)
        c = max(by_latency, by_headroom)
        plans.append(Plan(size, c, rate * size.seconds_per_job / c,
                          latency_quantile(c, rate, size.seconds_per_job, percentile),
                          "latency" if by_latency >= by_headroom else "utilization"))
    if not plans:
        fastest = min(s.seconds_per_job for s in sizes)
        raise ValueError(f"the fastest replica takes {fastest:.1f} s per job, more than the "
                         f"{target_latency_s:g} s target")
    return sorted(plans, key=lambda p: (p.devices, p.latency_s))


_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_duration(text: str) -> float:
    """'60s', '1.5min', '500ms', '2h' or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", text.lower())
    if not m or (m[2] and m[2] not in _UNITS):
        raise ValueError(f"cannot read {text!r} as a duration; write e.g. 60s, 1.5min, 2h")
    return float(m[1]) * _UNITS.get(m[2], 1)


def parse_rate(text: str) -> float:
    """'200/min', '3/s', '1000/hour' -> jobs per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*/\s*([a-z]+)\s*", text.lower())
    if not m or m[2] not in _UNITS or float(m[1]) <= 0:
        raise ValueError(f"cannot read {text!r} as a rate; write e.g. 200/min, 3/s, 1000/hour")
    return float(m[1]) / _UNITS[m[2]]
