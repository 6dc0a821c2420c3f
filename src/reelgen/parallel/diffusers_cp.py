"""Context parallelism for diffusers pipelines, through diffusers' own API: nothing here splits attention.

diffusers (>= 0.36; checked on 0.42.1) shards a transformer's token sequence over the ranks of a
torch.distributed job when the model class declares a `_cp_plan` (where to split inputs and gather
outputs) and its attention runs on a backend that supports context parallelism:

    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))  # or ring_degree=N

Ulysses: an all-to-all before and after each attention swaps the sequence split for a head split.
Ring: each rank keeps its queries and passes keys/values around. Every rank then runs the whole pipeline
with the same seed (text encoding, scheduler steps and VAE decode repeated, the denoiser split) and ends
with the same frames.

What this module adds is the checks diffusers makes late or not at all, each failing before the model
runs with a message naming the cause, and one work-around for the CPU (see `_cpu_device_index`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch.utils._python_dispatch import TorchDispatchMode

from reelgen.parallel.comm import Traffic

# Attention backends whose forward op can return the log-sum-exp that ring attention merges partial
# outputs with. diffusers' NATIVE backend (torch's scaled_dot_product_attention) raises "Native attention
# does not support return_lse=True" (models/attention_dispatch.py, _native_attention_forward_op, 0.42.1).
RING_BACKENDS = ("flash", "flash_hub", "_native_cudnn", "sage", "sage_hub", "_flash_3_hub")


class ContextParallelError(ValueError):
    """A pipeline, layout or machine that diffusers' context parallelism cannot run, said before it runs."""


@dataclass(frozen=True)
class Layout:
    """How the ranks share one transformer forward (diffusers' ContextParallelConfig degrees)."""

    ulysses: int = 1  # ranks exchanging heads for tokens with all-to-alls around each attention
    ring: int = 1  # ranks passing keys and values around a ring

    @property
    def ranks(self) -> int:
        return self.ulysses * self.ring


def denoiser(pipe) -> torch.nn.Module | None:
    """The pipeline's transformer, the module diffusers parallelizes (None for UNet pipelines such as SVD)."""
    return getattr(pipe, "transformer", None)


def models_with_cp_plan() -> list[str]:
    """Transformer classes of the installed diffusers that declare a `_cp_plan`."""
    import diffusers

    names = []
    for name in dir(diffusers):
        if not name.endswith("Model"):
            continue
        try:
            cls = getattr(diffusers, name)
        except Exception:  # a lazily imported class whose optional dependency is missing
            continue
        if isinstance(cls, type) and getattr(cls, "_cp_plan", None):
            names.append(name)
    return sorted(names)


def _attention_backend(model: torch.nn.Module) -> str:
    """The backend the model's attention dispatches to: its processors' own, else diffusers' active one."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    for module in model.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return str(getattr(backend, "value", backend))
    backend, _ = _AttentionBackendRegistry.get_active_backend()
    return str(backend.value)


# Denoisers whose `_cp_plan` diffusers declares but whose context-parallel forward fails, by the last
# diffusers version checked. LTX-Video: its attention processor expands the text mask to every head
# (transformer_ltx.py, LTXVideoAttnProcessor, line 77), but after Ulysses' all-to-all each rank holds
# heads / degree of them and TemplatedUlyssesAttention only gathers the mask's key axis
# (attention_dispatch.py, line 2573), so scaled_dot_product_attention fails with "The size of tensor a (2)
# must match the size of tensor b (4) at non-singleton dimension 1" on the first step; ring attention needs
# a GPU backend (RING_BACKENDS). Reported upstream as huggingface/diffusers#14316, fix proposed in #14317.
KNOWN_BROKEN = {"LTXVideoTransformer3DModel": (
    "0.42.1", "Ulysses attention does not split the text mask's head axis (diffusers issue #14316), so LTX-Video "
              "fails on the first step; ring attention needs a GPU attention backend")}


def check(pipe, layout: Layout) -> None:
    """Raise ContextParallelError for what diffusers would refuse, or fail on deep inside the first forward."""
    import diffusers
    from packaging.version import Version

    if not hasattr(diffusers, "ContextParallelConfig"):
        raise ContextParallelError(f"diffusers {diffusers.__version__} has no context parallelism "
                                   "(ContextParallelConfig arrived in 0.36); upgrade diffusers")
    if layout.ulysses < 1 or layout.ring < 1 or layout.ranks < 2:
        raise ContextParallelError(f"context parallelism needs degrees >= 1 and ulysses x ring >= 2 ranks, got "
                                   f"ulysses {layout.ulysses} x ring {layout.ring}")
    model = denoiser(pipe)
    if model is None or not getattr(model, "_cp_plan", None):
        what = type(model).__name__ if model is not None else f"{type(pipe).__name__} (it has no transformer)"
        raise ContextParallelError(f"{what} declares no _cp_plan in diffusers {diffusers.__version__}, so it cannot "
                                   f"run context-parallel; the models that do: {', '.join(models_with_cp_plan())}")
    name = type(model).__name__
    if name in KNOWN_BROKEN:
        checked, why = KNOWN_BROKEN[name]
        if Version(diffusers.__version__) <= Version(checked):
            raise ContextParallelError(f"{name} cannot run context-parallel in diffusers {diffusers.__version__}: "
                                       f"{why}")
    heads = getattr(model.config, "num_attention_heads", None)
    if layout.ulysses > 1 and heads is not None and heads % layout.ulysses:
        raise ContextParallelError(f"Ulysses splits the attention heads: {name} has {heads}, not divisible by "
                                   f"ulysses degree {layout.ulysses}")
    backend = _attention_backend(model)
    if layout.ring > 1 and backend not in RING_BACKENDS:
        raise ContextParallelError(
            f"ring attention merges partial results with the attention's log-sum-exp, which diffusers' "
            f"{backend!r} attention backend does not return (diffusers raises 'Native attention does not support "
            f"return_lse=True' in attention_dispatch._native_attention_forward_op). Use Ulysses, or on GPUs an "
            f"attention backend that returns it: {', '.join(RING_BACKENDS)}")
    world = td.get_world_size() if td.is_initialized() else 1
    if layout.ranks != world:
        raise ContextParallelError(f"ulysses {layout.ulysses} x ring {layout.ring} needs {layout.ranks} ranks, "
                                   f"the job has {world}")


def sequence_length(pipe, frames: int, height: int, width: int) -> int | None:
    """Video tokens the denoiser sees for a frames x height x width video; None for layouts not known here.

    Wan pipelines name their VAE factors vae_scale_factor_*, and the transformer's patch_size is (t, h, w).
    """
    model = denoiser(pipe)
    patch = getattr(getattr(model, "config", None), "patch_size", None)
    if not (hasattr(pipe, "vae_scale_factor_temporal") and isinstance(patch, (list, tuple)) and len(patch) == 3):
        return None
    latent_frames = (frames - 1) // pipe.vae_scale_factor_temporal + 1
    s = pipe.vae_scale_factor_spatial
    return latent_frames // patch[0] * (height // s // patch[1]) * (width // s // patch[2])


def check_size(pipe, layout: Layout, frames: int, height: int, width: int) -> None:
    """Refuse a video whose token count does not split evenly over the ranks.

    diffusers' even sharder asserts divisibility on the first forward; its "anything" modes that would
    lift this gather uneven pieces with `dist.all_gather`, which gloo refuses ("invalid tensor size").
    """
    tokens = sequence_length(pipe, frames, height, width)
    if tokens is not None and tokens % layout.ranks:
        raise ContextParallelError(f"{frames} frames of {width}x{height} make {tokens} tokens, which do not split "
                                   f"evenly over {layout.ranks} ranks; choose a size or frame count whose token "
                                   f"count divides by {layout.ranks}")


def bytes_per_forward(config, tokens: int, batch: int, ranks: int, element_size: int = 4) -> int:
    """Bytes one rank sends in one Ulysses forward of a WanTransformer3DModel (the plan of diffusers 0.42.1).

    Per block, self-attention's q, k, v and output each go through an all-to-all that keeps 1/P of a
    rank's (batch, tokens/P, heads, head_dim) slice; cross-attention is not split (the text stays whole
    on every rank). proj_out's output (batch, tokens/P, out_channels * prod(patch)) is all-gathered.
    """
    width = config.num_attention_heads * config.attention_head_dim
    per_block = 4 * batch * tokens * width * (ranks - 1) // ranks**2
    out = batch * tokens // ranks * config.out_channels * math.prod(config.patch_size) * (ranks - 1)
    return (config.num_layers * per_block + out) * element_size


@contextlib.contextmanager
def _cpu_device_index():
    """Let diffusers pick a device index on a machine without an accelerator.

    diffusers 0.42.1 computes each rank's device as `rank % torch.accelerator.device_count()`
    (models/modeling_utils.py, ModelMixin._resolve_parallel_config, line 1719), a ZeroDivisionError when the
    count is 0, as on every CPU-only machine: that, and only that, stops `enable_parallelism` there. Every
    rank's device is the CPU, so for the duration of that call the count reads 1 (device cpu:0, which
    context parallelism records but never uses; its DeviceMesh is built on "cpu" and gloo runs the
    all-to-alls). With an accelerator nothing changes.
    """
    if torch.accelerator.device_count() > 0:
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


def enable_context_parallel(pipe, layout: Layout):
    """Make `pipe`'s transformer run context-parallel over the job's ranks, in place; returns pipe.

    Every rank must call this on the same pipeline, then run it with the same arguments and seed, on
    a video whose token count divides by the number of ranks (check_size).
    """
    from diffusers import ContextParallelConfig

    check(pipe, layout)
    config = ContextParallelConfig(ulysses_degree=layout.ulysses, ring_degree=layout.ring)
    with _cpu_device_index():
        denoiser(pipe).enable_parallelism(config=config)
    return pipe


class count_traffic(TorchDispatchMode):
    """Count the bytes this rank sends in diffusers' collectives while active, into a Traffic.

    diffusers issues them as functional collectives (torch.ops._c10d_functional), which pass through a
    dispatch mode like this one. Bytes as ring algorithms move them: an all-to-all sends all but this
    rank's own piece, an all-gather sends this rank's piece to every other rank. The few plain
    `dist.all_gather` calls diffusers makes for sizes and masks are not seen (a few bytes each).
    """

    def __init__(self, traffic: Traffic):
        super().__init__()
        self.traffic = traffic

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ops = torch.ops._c10d_functional
        packet = func.overloadpacket
        if packet in (ops.all_to_all_single, ops.all_gather_into_tensor):
            x, group_name = args[0], args[-1]
            group = td.distributed_c10d._resolve_process_group(group_name)
            world, rank = td.get_world_size(group), td.get_rank(group)
            row = x.element_size() * (x.numel() // max(x.shape[0], 1))
            if packet is ops.all_to_all_single:
                splits = args[2] or [x.shape[0] // world] * world  # input_split_sizes
                self.traffic.add(row * (x.shape[0] - splits[rank]))
            else:
                self.traffic.add(x.numel() * x.element_size() * (world - 1))
        return func(*args, **kwargs)
