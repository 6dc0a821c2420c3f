"""Noise schedule and samplers: diffusers' schedulers configured for our models.

Cosine schedule ("squaredcos_cap_v2", Nichol & Dhariwal 2021) with
v-prediction (Salimans & Ho 2022): v stays well scaled at both ends of the
cosine schedule, where epsilon-prediction is ill-conditioned near t=T and a
small model's x0 estimate is unstable near t=0.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

NUM_TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"
PREDICTION_TYPE = "v_prediction"

# Clean-clip estimates clipped to the pixel range, [-1, 1] (diffusers' dynamic thresholding, whose
# threshold sample_max_value = 1 pins: Imagen's static thresholding). Guidance pushes the estimate
# far past the data's range (a black background's pixels to -3 and below at guidance 5); from there
# the model no longer grew objects and many clips came out as bare background. Paired
# `reelgen eval -n 16` at guidance 5 on a 1,400-step tubelet model: colour 0.50 / 0.31 -> 0.62 / 0.81
# (new phrasings / held-out combinations). EulerDiscreteScheduler has no thresholding in diffusers.
_CLIP_X0 = {"thresholding": True, "sample_max_value": 1.0}

# Sampler name -> (scheduler class, extra settings). "trailing" spacing starts
# sampling at t = T-1, so few-step sampling begins from (almost) pure noise.
# Euler-ancestral is left out: at the cosine schedule's sigma_max (~2e4) its
# sigma_down = sqrt(sigma_to^2 - sigma_up^2) rounds negative in float32 -> NaN.
SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "ddim": (DDIMScheduler, {"timestep_spacing": "trailing", "set_alpha_to_one": True, "clip_sample": False,
                             **_CLIP_X0}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                            "timestep_spacing": "trailing", "final_sigmas_type": "zero",
                                            **_CLIP_X0}),
    "unipc": (UniPCMultistepScheduler, {"timestep_spacing": "trailing", "final_sigmas_type": "zero", **_CLIP_X0}),
    "euler": (EulerDiscreteScheduler, {"timestep_spacing": "trailing"}),
    "ddpm": (DDPMScheduler, {"timestep_spacing": "trailing", "clip_sample": False, **_CLIP_X0}),
}


def make_scheduler(name: str) -> SchedulerMixin:
    """A fresh scheduler for one sampling run (schedulers hold per-run state)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    cls, extra = SAMPLERS[name]
    return cls(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
               prediction_type=PREDICTION_TYPE, **extra)


def training_scheduler() -> DDPMScheduler:
    """The forward process used in training: add_noise and get_velocity."""
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                         prediction_type=PREDICTION_TYPE, clip_sample=False)

