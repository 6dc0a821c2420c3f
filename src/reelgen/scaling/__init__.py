"""How many replicas: the autoscaling policy and the capacity planner, as pure functions (no torch).

- autoscale.desired_replicas: from the queue and the replicas now, what to scale to.
- plan.plan_capacity: from an arrival rate and measured timings, what a steady load needs.
"""
