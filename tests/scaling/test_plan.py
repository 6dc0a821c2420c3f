"""The capacity planner against queueing results that can be checked by hand."""

import math

import pytest

from reelgen.scaling.plan import (
    ReplicaSize,
    erlang_c,
    fit_alpha,
    latency_quantile,
    parse_duration,
    parse_rate,
    plan_capacity,
    replica_sizes,
    replicas_needed,
    speedup,
)


def test_erlang_c_matches_textbook_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: an arrival waits with probability rho
    assert erlang_c(3, 2) == pytest.approx(4 / 9)  # P0 = 1/9, C = (8/6)(3/1)(1/9)
    assert erlang_c(100, 80) < erlang_c(100, 95) < 1
    with pytest.raises(ValueError):
        erlang_c(2, 2)


def test_latency_quantile_of_mm1():
    # rate 0.5/s, 1 s jobs: P(wait > t) = 0.5 exp(-0.5 t); 5 % of jobs wait over 2 ln 10 s
    assert latency_quantile(1, 0.5, 1.0, 0.95) == pytest.approx(1 + 2 * math.log(10))
    assert latency_quantile(3, 0.5, 1.0, 0.95) == pytest.approx(1.0)  # rarely any wait: the job itself


def test_replicas_needed_for_200_per_minute():
    rate = parse_rate("200/min")
    # 12 s jobs are 40 erlangs: 41 replicas keep up, and with a 60 s target that is enough
    assert replicas_needed(rate, 12, 60) == 41
    # a 13 s target leaves 1 s to wait: more replicas, the fewest that meet it
    c = replicas_needed(rate, 12, 13)
    assert latency_quantile(c, rate, 12, 0.95) <= 13 < latency_quantile(c - 1, rate, 12, 0.95)
    with pytest.raises(ValueError, match="more than the 10 s target"):
        replicas_needed(rate, 12, 10)


def test_speedup_model():
    assert speedup(8, 0.0) == 8 and speedup(8, 1.0) == 1
    assert speedup(2, 0.25) == pytest.approx(1.6)
    assert fit_alpha(2, speedup(2, 0.3)) == pytest.approx(0.3)


def test_replica_sizes_speed_up_only_the_parallel_stage():
    sizes = replica_sizes({"encode_text": 0.5, "denoise": 10.0, "render": 1.5}, devices=(1, 2), alpha=0.25)
    assert [s.devices for s in sizes] == [1, 2]
    assert sizes[0].seconds_per_job == pytest.approx(12.0)
    assert sizes[1].seconds_per_job == pytest.approx(2.0 + 10.0 / 1.6)
    with pytest.raises(ValueError, match="denoise"):
        replica_sizes({"render": 1.0})


def test_plans_come_cheapest_first_and_say_what_bound_them():
    rate = parse_rate("200/min")
    sizes = [ReplicaSize("1 GPU", 1, 12.0), ReplicaSize("2 GPUs", 2, 7.0), ReplicaSize("slow", 1, 90.0)]
    plans = plan_capacity(rate, sizes, 60)
    assert [p.size.name for p in plans] == ["1 GPU", "2 GPUs"]  # 90 s jobs cannot meet 60 s
    one = plans[0]
    assert one.replicas == math.ceil(40 / 0.85) == 48 and one.bound == "utilization" and one.devices == 48
    assert one.utilization <= 0.85 and one.latency_s <= 60
    tight = plan_capacity(rate, sizes[:1], 13.0)[0]
    assert tight.bound == "latency" and tight.replicas == replicas_needed(rate, 12, 13)
    with pytest.raises(ValueError, match="fastest replica"):
        plan_capacity(rate, sizes[2:], 60)


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("1.5min", 90), ("500ms", 0.5), ("2h", 7200), ("45", 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, per_second", [("200/min", 200 / 60), ("3/s", 3), ("1000/hour", 1000 / 3600)])
def test_parse_rate(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["fast", "200", "0/min", "-3/s", "3/fortnight"])
def test_unreadable_rates_are_refused(bad):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


@pytest.mark.parametrize("bad", ["soon", "60 parsecs", "-5s"])
def test_unreadable_durations_are_refused(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
