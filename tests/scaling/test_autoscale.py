"""Worked examples of the autoscaling policy (the numbers are checked by hand in the comments)."""

import math

import pytest

from reelgen.scaling.autoscale import ClusterState, ScalingPolicy, desired_replicas, needed_replicas

POLICY = ScalingPolicy(min_replicas=1, max_replicas=4, target_latency_s=60, scale_up_cooldown_s=30,
                       scale_down_cooldown_s=300)


def state(**kw):
    base = dict(queued=0, oldest_queued_age_s=0.0, running=0, replicas=1, idle_replicas=1, seconds_per_job=12.0,
                since_last_scale_s=1000.0)
    return ClusterState(**{**base, **kw})


def test_one_busy_replica_and_no_queue_is_steady():
    d = desired_replicas(state(running=1, idle_replicas=0), POLICY)
    assert d.replicas == 1 and d.reason == "steady"


def test_a_burst_adds_just_enough_replicas():
    # budget 60 - 12 - 5 = 43 s: a free slot starts floor(43 / 12) + 1 = 4 jobs in time,
    # so (10 queued + 2 running) / 4 = 3 replicas.
    s = state(queued=10, oldest_queued_age_s=5, running=2, replicas=2, idle_replicas=0)
    assert needed_replicas(s, POLICY) == 3
    assert desired_replicas(s, POLICY).replicas == 3


def test_a_late_queue_gets_a_slot_per_job_up_to_the_maximum():
    # the oldest job waited 50 s: 60 - 12 - 50 < 0, so every one of the 12 jobs needs a slot now
    s = state(queued=10, oldest_queued_age_s=50, running=2, replicas=2, idle_replicas=0)
    assert needed_replicas(s, POLICY) == 12
    d = desired_replicas(s, POLICY)
    assert d.replicas == 4 and "(max)" in d.reason


def test_jobs_longer_than_the_target_also_get_a_slot_each():
    s = state(queued=2, running=1, replicas=1, idle_replicas=0, seconds_per_job=90)
    assert desired_replicas(s, POLICY).replicas == 3


def test_batching_replicas_need_fewer():
    policy = ScalingPolicy(max_replicas=8, target_latency_s=60, jobs_per_replica=2)
    # 4 starts per slot, 2 slots per replica: (14 + 2) / 8 = 2 replicas
    s = state(queued=14, oldest_queued_age_s=5, running=2, replicas=1, idle_replicas=0)
    assert desired_replicas(s, policy).replicas == 2


def test_scale_up_waits_for_the_cooldown_but_not_from_zero():
    burst = dict(queued=10, oldest_queued_age_s=5, running=2, replicas=2, idle_replicas=0)
    d = desired_replicas(state(**burst, since_last_scale_s=10), POLICY)
    assert d.replicas == 2 and "cooldown" in d.reason
    scale_to_zero = ScalingPolicy(min_replicas=0, max_replicas=4)
    d = desired_replicas(state(queued=1, replicas=0, idle_replicas=0, since_last_scale_s=1), scale_to_zero)
    assert d.replicas == 1 and "cold start" in d.reason


def test_scale_down_removes_idle_replicas_after_the_cooldown():
    s = state(running=1, replicas=4, idle_replicas=3)
    assert desired_replicas(s, POLICY).replicas == 1
    assert desired_replicas(state(running=1, replicas=4, idle_replicas=3, since_last_scale_s=100), POLICY).replicas == 4


def test_scale_down_never_removes_a_replica_running_a_job():
    # 3 replicas, 1 idle: the policy wants 1 but only the idle one may go
    assert desired_replicas(state(running=2, replicas=3, idle_replicas=1), POLICY).replicas == 2
    # two replicas of 2 slots each run one job each: 1 would do, but neither is idle
    policy = ScalingPolicy(max_replicas=4, jobs_per_replica=2)
    d = desired_replicas(state(running=2, replicas=2, idle_replicas=0), policy)
    assert d.replicas == 2 and "running jobs" in d.reason


def test_limits_hold():
    assert desired_replicas(state(replicas=2, idle_replicas=2), POLICY).replicas == 1  # min 1
    assert desired_replicas(state(replicas=0, idle_replicas=0), ScalingPolicy(min_replicas=0)).replicas == 0


@pytest.mark.parametrize("kw", [dict(queued=-1), dict(idle_replicas=2, replicas=1), dict(seconds_per_job=0)])
def test_bad_states_are_refused(kw):
    with pytest.raises(ValueError):
        desired_replicas(state(**kw), POLICY)


@pytest.mark.parametrize("kw", [dict(min_replicas=3, max_replicas=2), dict(max_replicas=0), dict(target_latency_s=0),
                                dict(jobs_per_replica=0), dict(scale_up_cooldown_s=-1)])
def test_bad_policies_are_refused(kw):
    with pytest.raises(ValueError):
        ScalingPolicy(**kw)


def test_a_burst_scales_up_then_back_down_without_killing_a_job():
    """Simulated second by second: 20 jobs of 10 s at t=0 on 1 replica, replicas start in 5 s."""
    policy = ScalingPolicy(min_replicas=1, max_replicas=4, target_latency_s=60, scale_up_cooldown_s=10,
                           scale_down_cooldown_s=30)
    queue = [0.0] * 20  # submission times
    replicas = [{"ready_at": 0.0, "busy_until": None}]
    last_scale, history, latencies = -math.inf, [], []
    for now in range(0, 400):
        for r in replicas:  # finish jobs, then hand out queued ones
            if r["busy_until"] is not None and r["busy_until"] <= now:
                r["busy_until"] = None
            if r["busy_until"] is None and r["ready_at"] <= now and queue:
                latencies.append(now + 10 - queue.pop(0))
                r["busy_until"] = now + 10
        idle = [r for r in replicas if r["busy_until"] is None]
        s = ClusterState(queued=len(queue), oldest_queued_age_s=now - queue[0] if queue else 0.0,
                         running=len(replicas) - len(idle), replicas=len(replicas), idle_replicas=len(idle),
                         seconds_per_job=10, since_last_scale_s=now - last_scale)
        want = desired_replicas(s, policy).replicas
        if want > len(replicas):
            replicas += [{"ready_at": now + 5, "busy_until": None} for _ in range(want - len(replicas))]
        elif want < len(replicas):
            for r in idle[:len(replicas) - want]:
                replicas.remove(r)  # only idle replicas are offered for removal
        if want != s.replicas:
            last_scale = now
        history.append(len(replicas))
    assert max(history) == 4 and history[-1] == 1
    assert len(latencies) == 20
    assert max(latencies) <= 60  # 4 replicas at once (6 starts per slot in the 50 s budget), despite the 5 s start-up
