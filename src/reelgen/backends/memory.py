"""Memory and speed options of a diffusers model: what they mean, whether this machine can run them, applying them.

`MemoryOptions` and `check_options` are plain Python, so a registry can be validated without torch;
`check_runtime` and `apply_options` import torch and touch the pipeline.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from reelgen.backends.model_table import STEP_CACHES, ModelFamily

DTYPES = ("float32", "float16", "bfloat16")
# torchao schemes for the denoiser's linear layers (torchao_config builds each one for its device)
QUANTIZATIONS = {
    "int8wo": "int8 weights, float activations",
    "int8dq": "int8 weights and dynamically quantized int8 activations",
    "fp8wo": "float8 weights, upcast at matmul: smaller, not faster",
    "fp8": "float8 weights and activations: float8 matmuls on float8 tensor cores",
    "int4wo": "4-bit weights packed two to a byte, one scale and zero per group of 128 inputs",
}
INT4_GROUP = 128  # torchao's default; linear layers whose input width is no multiple of it stay unquantized
# the devices a scheme runs on, and why not elsewhere
_DEVICES = {"fp8": (("cuda",), "float8 matmuls need an NVIDIA GPU with compute capability 8.9+ (Ada, Hopper)"),
            "int4wo": (("cpu", "cuda"), "torchao packs int4 weights for the CPU and for CUDA GPUs only")}
# Attention backends that run on a CPU; the rest need CUDA (or their own packages, checked by diffusers)
CPU_ATTENTION_BACKENDS = ("native", "_native_math", "flex")


@dataclass(frozen=True)
class MemoryOptions:
    cpu_offload: bool = False  # keep components on the CPU and move each to the GPU while it runs
    sequential_offload: bool = False  # stream single layers to the GPU: least memory, slowest
    vae_slicing: bool = False  # decode the videos of a batch one at a time
    vae_tiling: bool = False  # decode in overlapping tiles: the fix for running out of memory at VAE decode
    attention_backend: str | None = None  # a diffusers attention backend: native, flash, sage, xformers, ...
    torch_compile: bool = False  # torch.compile the denoiser's repeated blocks (first call compiles: slow)
    quantization: str | None = None  # a key of QUANTIZATIONS, applied to the denoiser with torchao
    step_cache: str | None = None  # one of STEP_CACHES: reuse block outputs across denoising steps
    step_cache_options: dict[str, Any] = field(default_factory=dict)  # fields of the diffusers cache config

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _is_accelerator(device: str) -> bool:
    return device.split(":")[0] in ("cuda", "xpu", "mps")


def check_options(options: MemoryOptions, family: ModelFamily, *, device: str, dtype: str) -> None:
    """Reject options this model or device cannot run, naming the option: ValueError("memory.<name>: ...")."""
    on_cpu = not _is_accelerator(device)
    if dtype == "float16" and on_cpu:
        raise ValueError("dtype: float16 on the CPU is unusably slow (and some ops lack CPU kernels); "
                         "use float32, or bfloat16 on CPUs with AVX512-BF16/AMX")
    if dtype == "bfloat16" and on_cpu:
        warnings.warn("dtype bfloat16 on the CPU: matmuls run ~300x slower than float32 on CPUs without "
                      "AVX512-BF16/AMX; measure before serving", stacklevel=3)
    for name in ("cpu_offload", "sequential_offload"):
        if getattr(options, name) and on_cpu:
            raise ValueError(f"memory.{name}: offloading moves weights between the CPU and a GPU; with device "
                             f"{device!r} everything already lives in CPU memory")
    if options.cpu_offload and options.sequential_offload:
        raise ValueError("memory.sequential_offload: choose one of cpu_offload and sequential_offload")
    for name in ("vae_slicing", "vae_tiling"):
        if getattr(options, name) and not getattr(family, name):
            hint = "; set call_options.decode_chunk_size instead" if family.name == "svd" else ""
            raise ValueError(f"memory.{name}: the {family.name} VAE does not support it{hint}")
    if options.quantization is not None:
        if options.quantization not in QUANTIZATIONS:
            raise ValueError(f"memory.quantization: choose one of {', '.join(QUANTIZATIONS)}, "
                             f"got {options.quantization!r}")
        kinds, why = _DEVICES.get(options.quantization, (None, ""))
        if kinds is not None and device.split(":")[0] not in kinds:
            raise ValueError(f"memory.quantization: {options.quantization}: {why}; device is {device!r} "
                             "(int8wo, int8dq and fp8wo run anywhere)")
        if options.quantization == "int4wo" and device.startswith("cuda") and dtype != "bfloat16":
            raise ValueError("memory.quantization: int4wo: the CUDA int4 kernel (tinygemm) takes bfloat16 only; "
                             "set dtype = \"bfloat16\"")
        if options.quantization == "int4wo" and on_cpu and dtype == "float32":
            warnings.warn("int4wo on the CPU with float32: torch's CPU int4 matmul runs far slower with float32 "
                          "inputs than a plain float32 matmul; it saves memory, not time (bench_diffusers.py)",
                          stacklevel=3)
    if options.attention_backend is not None and on_cpu and options.attention_backend not in CPU_ATTENTION_BACKENDS:
        raise ValueError(f"memory.attention_backend: {options.attention_backend!r} needs a GPU; on the CPU choose "
                         f"one of {', '.join(CPU_ATTENTION_BACKENDS)}")
    if options.step_cache is not None:
        if options.step_cache not in STEP_CACHES:
            raise ValueError(f"memory.step_cache: choose one of {', '.join(STEP_CACHES)}, got {options.step_cache!r}")
        if options.step_cache not in family.caches:
            supported = ", ".join(family.caches) or "none"
            raise ValueError(f"memory.step_cache: {family.name} models do not support {options.step_cache} "
                             f"(supported: {supported})")
    elif options.step_cache_options:
        raise ValueError("memory.step_cache_options: set memory.step_cache too")


def check_runtime(options: MemoryOptions, *, device: str, dtype: str) -> None:
    """Reject what this machine lacks (a GPU, its capability, a package) before any weights load."""
    import torch

    kind, _, index = device.partition(":")
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if kind not in available:
        raise ValueError(f"device: unknown device {device!r}; use cpu, cuda, cuda:N, mps or xpu")
    if not available[kind]():
        raise ValueError(f"device: {device!r} is not available on this machine (torch {torch.__version__})")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype == "bfloat16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("dtype: this GPU has no bfloat16 support; use float16")
    if options.quantization is not None:
        try:
            import torchao.quantization  # noqa: F401
        except ImportError as e:
            raise ValueError(f"memory.quantization: needs torchao ({e})") from e
        needs = {"fp8": (8, 9), "int4wo": (8, 0)}.get(options.quantization)
        if needs and kind == "cuda" and torch.cuda.get_device_capability(device) < needs:
            raise ValueError(f"memory.quantization: {options.quantization} needs a GPU of compute capability "
                             f"{'.'.join(map(str, needs))}+; {device} has "
                             f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")
    if options.attention_backend is not None:
        from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

        names = [b.value for b in AttentionBackendName]
        if options.attention_backend not in names:
            raise ValueError(f"memory.attention_backend: unknown backend {options.attention_backend!r}; diffusers "
                             f"knows {', '.join(n for n in names if not n.startswith('_'))}")
        try:
            _check_attention_backend_requirements(AttentionBackendName(options.attention_backend))
        except (RuntimeError, ImportError) as e:
            raise ValueError(f"memory.attention_backend: {e}") from e
    if options.torch_compile and kind == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        raise ValueError("memory.torch_compile: compiling for the CPU needs a C++ compiler (g++), none found")


def step_cache_config(options: MemoryOptions, family: ModelFamily, current_timestep):
    """The diffusers cache config for options.step_cache; `current_timestep()` reads the running pipeline's."""
    import diffusers

    defaults: dict[str, dict[str, Any]] = {
        "first_block_cache": {"threshold": 0.05},
        "pyramid_attention_broadcast": {"spatial_attention_block_skip_range": 2,
                                        "spatial_attention_timestep_skip_range": (100, 800),
                                        "current_timestep_callback": current_timestep},
        "faster_cache": {"spatial_attention_block_skip_range": 2,
                         "spatial_attention_timestep_skip_range": (-1, 681),
                         "attention_weight_callback": lambda _: 0.5,
                         "current_timestep_callback": current_timestep,
                         "tensor_format": family.latent_layout,
                         # a guidance-distilled model runs no unconditional batch to skip
                         "is_guidance_distilled": family.guidance_distilled},
    }
    cls = getattr(diffusers, {"first_block_cache": "FirstBlockCacheConfig",
                              "pyramid_attention_broadcast": "PyramidAttentionBroadcastConfig",
                              "faster_cache": "FasterCacheConfig"}[options.step_cache])
    known = {f.name for f in fields(cls)}
    unknown = set(options.step_cache_options) - known
    if unknown:
        raise ValueError(f"memory.step_cache_options: {cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    kwargs = defaults[options.step_cache] | {k: tuple(v) if isinstance(v, list) else v
                                             for k, v in options.step_cache_options.items()}
    return cls(**kwargs)


def apply_options(pipe, options: MemoryOptions, family: ModelFamily, device: str) -> None:
    """Configure a freshly loaded pipeline in the order these options compose: backend, quantize, cache, place."""
    denoiser = getattr(pipe, family.denoiser)
    if options.attention_backend is not None:
        denoiser.set_attention_backend(options.attention_backend)
    offload = options.cpu_offload or options.sequential_offload
    if not offload:
        pipe.to(device)  # torchao quantizes on the device the kernels will run on
    if options.quantization is not None:
        import torchao.quantization as tq

        # on the device its kernels run on, with offloading too (int4's CUDA layout is packed by a CUDA op);
        # offloading then moves the quantized weights back to the CPU between uses
        tq.quantize_(denoiser, torchao_config(options.quantization, device), device=device)
    if options.step_cache is not None:
        denoiser.enable_cache(step_cache_config(options, family, lambda: pipe.current_timestep))
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    elif options.sequential_offload:
        pipe.enable_sequential_cpu_offload(device=device)
    if options.torch_compile:
        if getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=True)
        else:
            denoiser.compile()


def torchao_config(name: str, device: str):
    """The torchao config of the QUANTIZATIONS scheme `name` for weights that run on `device`."""
    import torchao.quantization as tq

    if name == "int4wo" and device.startswith("cuda"):
        # the tinygemm layout torch's own CUDA int4 matmul reads (the default layout needs the mslk package)
        return tq.Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d")
    if name == "int4wo":
        # Int4OpaqueTensor: packed for torch's CPU int4 matmul (_weight_int4pack_mm_for_cpu); a prototype in
        # torchao 0.18, where Int4WeightOnlyConfig has no CPU layout that packs
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP)
    return {"int8wo": tq.Int8WeightOnlyConfig, "int8dq": tq.Int8DynamicActivationInt8WeightConfig,
            "fp8wo": tq.Float8WeightOnlyConfig, "fp8": tq.Float8DynamicActivationFloat8WeightConfig}[name]()


def weight_bytes(module) -> int:
    """Bytes of a module's parameters and buffers, counting the inner tensors of torchao's quantized tensors."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    def size(t) -> int:
        if is_traceable_wrapper_subclass(t):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    return sum(size(t) for t in (*module.parameters(), *module.buffers()))
