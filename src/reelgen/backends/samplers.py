"""The request's `sampler` for a diffusers pipeline: the scheduler its family runs under that name.

Which names a family accepts, and the scheduler class of each, is a table in model_table (plain Python,
for the API). This module builds the scheduler: `from_config` of the one the model folder ships, so the
training schedule (betas, timestep count, shift) carries over, plus the settings that put multistep
solvers into flow-matching mode for flow models. The shipped scheduler itself is used untouched when
the request names its sampler (or none).
"""

from __future__ import annotations

import diffusers

from reelgen.backends.model_table import ModelFamily

_FLOW_SOLVERS = ("UniPCMultistepScheduler", "DPMSolverMultistepScheduler")


def _flow_shift(config) -> float:
    """The timestep shift of a flow schedule: FlowMatchEuler names it `shift`, the multistep solvers `flow_shift`."""
    return float(config.get("flow_shift") or config.get("shift") or 1.0)


class SchedulerSet:
    """The schedulers one loaded pipeline runs, built on first use and kept (set_timesteps resets their state)."""

    def __init__(self, shipped, family: ModelFamily):
        self.family = family
        self.shipped = shipped
        self._built = {}

    def get(self, sampler: str):
        """The scheduler for `sampler`, one of family.samplers (the spec checked the request already)."""
        if sampler not in self._built:
            self._built[sampler] = self._build(self.family.samplers[sampler])
        return self._built[sampler]

    def _build(self, class_name: str):
        if type(self.shipped).__name__ == class_name:
            return self.shipped
        cls = getattr(diffusers, class_name)
        config = self.shipped.config
        if class_name in _FLOW_SOLVERS:
            return cls.from_config(config, prediction_type="flow_prediction", use_flow_sigmas=True,
                                   flow_shift=_flow_shift(config))
        if class_name == "FlowMatchEulerDiscreteScheduler":
            return cls.from_config(config, shift=_flow_shift(config))
        return cls.from_config(config)
