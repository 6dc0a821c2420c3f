"""What each family of open video models can do: one table for the diffusers backend and for the API's ModelSpec.

Plain Python (no torch): the API reads specs built from this table without loading a model.
Figures are the models' published defaults (model cards and the diffusers pipelines' own defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reelgen.backends.base import ModelSpec

STEP_CACHES = ("first_block_cache", "pyramid_attention_broadcast", "faster_cache")
# FasterCache assumes the conditional and unconditional passes share one batch; Wan runs them as two
# forward calls, and LTX's packed (B, N, C) latents have no frame axis for its frequency split.
_NO_FASTER_CACHE = ("first_block_cache", "pyramid_attention_broadcast")

# The request's `sampler` -> the diffusers scheduler a family runs for it, built with from_config of the
# scheduler its folder ships. Only pairings that solve the model's own ODE are offered; any other name is refused:
# - Wan's pipeline calls set_timesteps(steps) plainly, so the flow-matching variants of UniPC and DPM-Solver++
#   fit it (Wan's own diffusers release ships UniPC in flow mode);
# - LTX-Video and HunyuanVideo pass custom sigmas (and LTX a resolution shift `mu`) that only
#   FlowMatchEulerDiscreteScheduler takes;
# - CogVideoX was trained on an SNR-shifted schedule that only its own DDIM and DPM schedulers reproduce;
# - SVD's UNet takes EulerDiscreteScheduler's continuous (log-sigma) timesteps, which no other scheduler makes.
_FLOW_SAMPLERS = (("euler", "FlowMatchEulerDiscreteScheduler"), ("unipc", "UniPCMultistepScheduler"),
                  ("dpm++", "DPMSolverMultistepScheduler"))
_FLOW_EULER_ONLY = (("euler", "FlowMatchEulerDiscreteScheduler"),)


@dataclass(frozen=True)
class ModelFamily:
    name: str  # the registry's `family` value
    pipeline: str  # diffusers pipeline class; model_index.json's _class_name
    description: str
    fps: int  # native frame rate
    frames_step: int  # valid frame counts are frames_step * k + frames_offset ...
    frames_offset: int
    max_frames: int  # ... up to the longest clip the model was trained for
    sizes: tuple[str, ...]  # "WxH" resolutions the model generates well; the first is the default
    size_multiple: int  # other widths and heights must be multiples of this (VAE and patch strides)
    default_seconds: str
    default_steps: int
    default_guidance_scale: float
    image_to_video: bool = False  # takes a first frame
    requires_image: bool = False  # takes nothing else: every request needs one
    takes_prompt: bool = True
    denoiser: str = "transformer"  # the pipeline component that runs every step (quantized, compiled, cached)
    caches: tuple[str, ...] = STEP_CACHES  # diffusers step caches the denoiser supports
    vae_slicing: bool = True
    vae_tiling: bool = True
    guidance_argument: str = "guidance_scale"  # the __call__ argument the request's guidance_scale goes to
    fps_argument: str | None = None  # the __call__ argument that conditions on the frame rate, if any
    latent_layout: str = "BCFHW"  # how the denoiser's input latents are laid out (FasterCache needs it)
    guidance_distilled: bool = False  # guidance is an input of the model, not a second (unconditional) pass
    schedulers: tuple[tuple[str, str], ...] = _FLOW_SAMPLERS  # (sampler name, diffusers scheduler class) it runs
    default_sampler: str = "euler"  # for hub ids; a folder's default is the sampler of the scheduler it ships

    @property
    def samplers(self) -> dict[str, str]:
        """Sampler name -> diffusers scheduler class name."""
        return dict(self.schedulers)

    def sampler_of(self, scheduler_class: str) -> str | None:
        """The sampler name a shipped scheduler class runs as, None when this family has no name for it."""
        return next((name for name, cls in self.schedulers if cls == scheduler_class), None)


_WAN_SIZES = ("832x480", "480x832", "1280x720", "720x1280")  # 480p for the 1.3B/480p models, 720p for 14B

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("wan", "WanPipeline", "Wan2.1 text-to-video (1.3B at 480p, 14B at 480p/720p)",
                fps=16, frames_step=4, frames_offset=1, max_frames=81, sizes=_WAN_SIZES, size_multiple=16,
                default_seconds="5", default_steps=50, default_guidance_scale=5.0, caches=_NO_FASTER_CACHE,
                default_sampler="unipc"),
    ModelFamily("wan-i2v", "WanImageToVideoPipeline", "Wan2.1 image-to-video (14B, 480p or 720p)",
                fps=16, frames_step=4, frames_offset=1, max_frames=81, sizes=_WAN_SIZES, size_multiple=16,
                default_seconds="5", default_steps=50, default_guidance_scale=5.0, caches=_NO_FASTER_CACHE,
                image_to_video=True, requires_image=True, default_sampler="unipc"),
    ModelFamily("cogvideox", "CogVideoXPipeline", "CogVideoX text-to-video (2B/5B, 720x480, 6 s at 8 fps)",
                fps=8, frames_step=8, frames_offset=1, max_frames=49, sizes=("720x480",), size_multiple=16,
                default_seconds="6", default_steps=50, default_guidance_scale=6.0, latent_layout="BFCHW",
                schedulers=(("ddim", "CogVideoXDDIMScheduler"), ("dpm++", "CogVideoXDPMScheduler")),
                default_sampler="ddim"),  # CogVideoX-2b ships DDIM, 5b its DPM scheduler
    ModelFamily("ltx", "LTXPipeline", "LTX-Video text-to-video (real-time class model, 25 fps)",
                fps=25, frames_step=8, frames_offset=1, max_frames=161,
                sizes=("768x512", "512x768", "704x480", "480x704"), size_multiple=32,
                default_seconds="5", default_steps=50, default_guidance_scale=3.0, fps_argument="frame_rate",
                caches=_NO_FASTER_CACHE, schedulers=_FLOW_EULER_ONLY),
    ModelFamily("hunyuan-video", "HunyuanVideoPipeline", "HunyuanVideo text-to-video (13B, guidance-distilled)",
                fps=24, frames_step=4, frames_offset=1, max_frames=129,
                sizes=("1280x720", "720x1280", "960x544", "544x960", "848x480", "480x848"), size_multiple=16,
                default_seconds="5", default_steps=50, default_guidance_scale=6.0, guidance_distilled=True,
                schedulers=_FLOW_EULER_ONLY),
    ModelFamily("svd", "StableVideoDiffusionPipeline",
                "Stable Video Diffusion image-to-video (SVD: 14 frames, SVD-XT: 25); the prompt is not used",
                fps=7, frames_step=1, frames_offset=0, max_frames=25, sizes=("1024x576", "576x1024"),
                size_multiple=64, default_seconds="2", default_steps=25, default_guidance_scale=3.0,
                image_to_video=True, requires_image=True, takes_prompt=False, denoiser="unet", caches=(),
                vae_slicing=False, vae_tiling=False,  # its temporal decoder decodes decode_chunk_size frames at a time
                guidance_argument="max_guidance_scale", fps_argument="fps",
                schedulers=(("euler", "EulerDiscreteScheduler"),)),
)}

FAMILY_BY_PIPELINE = {f.pipeline: f.name for f in FAMILIES.values()}


def parse_size(size: str) -> tuple[int, int]:
    """'832x480' -> (832, 480); ValueError on anything else."""
    parts = size.split("x") if isinstance(size, str) else []
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size must look like '832x480' (width x height), got {size!r}")
    return int(parts[0]), int(parts[1])


def family_spec(family: ModelFamily, model_id: str, *, description: str | None = None, fps: int | None = None,
                max_frames: int | None = None, sizes: tuple[str, ...] | None = None, default_size: str | None = None,
                default_seconds: str | None = None, default_steps: int | None = None,
                default_guidance_scale: float | None = None, default_sampler: str | None = None) -> ModelSpec:
    """The ModelSpec of a served model of `family`; each argument overrides the family's default (registry limits)."""
    sizes = tuple(sizes or family.sizes)
    for size in sizes:
        w, h = parse_size(size)
        if w % family.size_multiple or h % family.size_multiple:
            raise ValueError(f"size {size!r}: {family.name} models need width and height divisible by "
                             f"{family.size_multiple}")
    default_size = default_size or sizes[0]
    if default_size not in sizes:
        raise ValueError(f"default_size {default_size!r} is not one of the sizes {', '.join(sizes)}")
    max_frames = max_frames or family.max_frames
    if max_frames < 2 or (max_frames - family.frames_offset) % family.frames_step:
        raise ValueError(f"max_frames {max_frames}: {family.name} models generate {family.frames_step}k+"
                         f"{family.frames_offset} frames")
    spec = ModelSpec(
        id=model_id, description=description or family.description, native_size=parse_size(default_size),
        fps=fps or family.fps, max_frames=max_frames, sizes=sizes, default_size=default_size,
        default_seconds=default_seconds or "1",  # settled below, once the seconds are known
        default_steps=default_steps or family.default_steps,
        default_guidance_scale=family.default_guidance_scale if default_guidance_scale is None
        else default_guidance_scale,
        image_to_video=family.image_to_video, requires_image=family.requires_image,
        frames_step=family.frames_step, frames_offset=family.frames_offset,
        samplers=tuple(family.samplers), default_sampler=default_sampler or family.default_sampler)
    if not spec.seconds:
        raise ValueError(f"max_frames {max_frames} at {spec.fps} fps is shorter than one second")
    if default_seconds is None:  # the family's default, or the longest clip when limits cut it shorter
        default = family.default_seconds if family.default_seconds in spec.seconds else spec.seconds[-1]
        spec = replace(spec, default_seconds=default)
    if spec.default_seconds not in spec.seconds:
        raise ValueError(f"default_seconds {spec.default_seconds!r} is not one of {', '.join(spec.seconds)} "
                         f"(max_frames {max_frames} at {spec.fps} fps)")
    return spec
