"""`reelgen generate` with an open model: the flags that pick a diffusers model and its memory and speed options.

The flags become one models.toml entry (the file's, when --models-file names one, with the flags on top), so
the CLI and the service validate a model the same way: an option this machine cannot run (offloading or fp8
without a GPU, float16 on a CPU, a step cache the model lacks) stops with one message naming the flag,
before any weights load.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from contextlib import contextmanager
from pathlib import Path

from reelgen.backends.memory import CPU_ATTENTION_BACKENDS, DTYPES
from reelgen.backends.registry import RegistryError, parse_entry

# flag value -> MemoryOptions.quantization (torchao schemes) and MemoryOptions.step_cache (diffusers hooks)
QUANTIZE = {"int8-weight": "int8wo", "int8-dynamic": "int8dq", "fp8-weight": "fp8wo", "fp8": "fp8", "int4": "int4wo"}
CACHES = {"first-block": "first_block_cache", "pab": "pyramid_attention_broadcast", "fastercache": "faster_cache"}
OFFLOAD = {"model": "cpu_offload", "sequential": "sequential_offload"}
# The built-in model's defaults for the options whose default an open model takes from its registry entry
BUILTIN_DEFAULTS = {"steps": 20, "guidance": 5.0, "fps": 8, "min_side": 256}
_MODEL_FLAGS = ("model", "models_file", "model_path", "family", "image", "size", "dtype", "cpu_offload",
                "vae_slicing", "vae_tiling", "attention_backend", "compile", "quantize", "cache", "cache_threshold")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "open models (diffusers)",
        "Run a model from a models.toml (--model NAME --models-file FILE) or a diffusers pipeline folder "
        "(--model-path DIR) instead of the built-in model. --steps, --guidance, --sampler, --frames and --fps "
        "then default to the model's own values, and the video keeps the generated size unless --min-side is given. "
        "Memory options override the registry entry's.")
    g.add_argument("--model", help="a model id from --models-file")
    g.add_argument("--models-file", type=Path, help="a models.toml naming models (see `reelgen serve --models-file`)")
    g.add_argument("--model-path", type=Path, help="a diffusers pipeline folder (model_index.json and components)")
    g.add_argument("--family", help="the model family of --model-path (default: read from model_index.json)")
    g.add_argument("--image", type=Path, help="first frame for image-to-video models (PNG, JPEG or WebP)")
    g.add_argument("--size", help="WxH to generate: one of the model's sizes, or with --model-path any size on its "
                                  "family's grid (default: its default size)")
    g.add_argument("--dtype", choices=DTYPES, help="weights and compute dtype (float16 needs a GPU; bfloat16 is very "
                                                   "slow on CPUs without AVX512-BF16)")
    g.add_argument("--device", help="cpu, cuda, cuda:N, mps or xpu; the built-in model takes it too (default: cpu, "
                                    "or an open model's entry's)")
    g.add_argument("--cpu-offload", choices=list(OFFLOAD),
                   help="GPU only: keep weights in CPU memory and move each component (model) or layer "
                        "(sequential: least memory, slowest) to the GPU while it runs")
    g.add_argument("--vae-slicing", action="store_true", default=None, help="decode the videos of a batch one at "
                                                                            "a time")
    g.add_argument("--vae-tiling", action="store_true", default=None,
                   help="decode in overlapping tiles: the fix for running out of memory at VAE decode")
    g.add_argument("--attention-backend", help=f"a diffusers attention backend (on the CPU: "
                                               f"{', '.join(CPU_ATTENTION_BACKENDS)}; GPUs: flash, sage, ...)")
    g.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the denoiser's repeated blocks (the first video compiles: slow)")
    g.add_argument("--quantize", choices=list(QUANTIZE),
                   help="quantize the denoiser with torchao: int8 weight-only, int8 dynamic, float8 weight-only, "
                        "int4 weight-only (CPU or CUDA with bfloat16; on a CPU it saves memory, not time); fp8 "
                        "matmuls need a CUDA GPU")
    g.add_argument("--cache", choices=list(CACHES),
                   help="reuse block outputs across denoising steps: First Block Cache, Pyramid Attention "
                        "Broadcast, FasterCache (where the model supports it)")
    g.add_argument("--cache-threshold", type=float,
                   help="First Block Cache threshold: higher skips more steps and changes the video more "
                        "(default: 0.05)")


def uses_open_model(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("model", "models_file", "model_path"))


def fill_builtin_defaults(args: argparse.Namespace, local_device: bool = True) -> None:
    """The built-in model's defaults; refuses the flags only open models take and (local_device: the model
    runs in this process, not on Ray workers) a device this machine lacks."""
    from reelgen.pipelines.device import resolve_device
    from reelgen.pipelines.request import DEFAULT_SAMPLER

    given = [name for name in _MODEL_FLAGS if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{flags}: only for open models (--model with --models-file, or --model-path); the built-in "
                         "model generates from text at its one size")
    for name, value in BUILTIN_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.sampler is None:
        args.sampler = DEFAULT_SAMPLER
    if args.device is None:
        args.device = "cpu"
    if local_device:
        try:
            resolve_device(args.device)
        except ValueError as e:
            raise ValueError(f"--device {args.device}: {e}") from None


def _memory_flags(args: argparse.Namespace) -> tuple[dict, dict, dict[str, str]]:
    """(top-level entry fields, memory fields, {entry field: the flag that set it}) from the flags given."""
    top, memory, flags = {}, {}, {}
    for name in ("dtype", "device"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
            flags[name] = f"--{name} {getattr(args, name)}"
    if args.cpu_offload is not None:
        memory[OFFLOAD[args.cpu_offload]] = True
        flags[f"memory.{OFFLOAD[args.cpu_offload]}"] = f"--cpu-offload {args.cpu_offload}"
    for name, field in (("vae_slicing", "vae_slicing"), ("vae_tiling", "vae_tiling"), ("compile", "torch_compile")):
        if getattr(args, name):
            memory[field] = True
            flags[f"memory.{field}"] = "--" + name.replace("_", "-")
    if args.attention_backend is not None:
        memory["attention_backend"] = args.attention_backend
        flags["memory.attention_backend"] = f"--attention-backend {args.attention_backend}"
    if args.quantize is not None:
        memory["quantization"] = QUANTIZE[args.quantize]
        flags["memory.quantization"] = f"--quantize {args.quantize}"
    if args.cache is not None:
        memory["step_cache"] = CACHES[args.cache]
        flags["memory.step_cache"] = f"--cache {args.cache}"
    if args.cache_threshold is not None:
        if args.cache != "first-block":
            raise ValueError("--cache-threshold: only with --cache first-block")
        memory["step_cache_options"] = {"threshold": args.cache_threshold}
    return top, memory, flags


def _entry(args: argparse.Namespace) -> tuple[dict, Path, str]:
    """The models.toml entry the flags name, its base folder, and where it came from (for messages)."""
    if args.model_path is not None:
        if args.model is not None or args.models_file is not None:
            raise ValueError("--model-path: give either a folder (--model-path) or a registry model (--model with "
                             "--models-file), not both")
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", args.model_path.resolve().name).strip("-._")[:64] or "model"
        entry = {"id": name, "backend": "diffusers", "path": str(args.model_path)}
        if args.family is not None:
            entry["family"] = args.family
        if args.size is not None:  # any size on the family's grid, as a registry's limits.sizes may list
            entry["limits"] = {"sizes": [args.size]}
        return entry, Path("."), str(args.model_path)
    if args.family is not None:
        raise ValueError("--family: only with --model-path (a registry entry names its own family)")
    if args.model is None or args.models_file is None:
        raise ValueError("--model and --models-file go together: the model id and the models.toml that names it")
    try:
        data = tomllib.loads(args.models_file.read_text())
    except OSError as e:
        raise RegistryError(f"cannot read model registry {args.models_file}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{args.models_file}: not valid TOML: {e}") from e
    entries = [e for e in data.get("models", []) if isinstance(e, dict)]
    for entry in entries:
        if entry.get("id") == args.model:
            return dict(entry), args.models_file.parent, f"{args.models_file}: model {args.model!r}"
    ids = ", ".join(str(e.get("id")) for e in entries) or "no models"
    raise ValueError(f"--model: {args.models_file} has no model {args.model!r}; it names {ids}")


def model_config(args: argparse.Namespace):
    """-> (the validated config of the model the flags name, with the memory flags applied; the flags that set
    entry fields; the entry's source). Errors name the flag or the entry."""
    entry, base_dir, source = _entry(args)
    top, memory, flags = _memory_flags(args)
    entry |= top
    if memory:
        entry["memory"] = {**entry.get("memory", {}), **memory}
    if entry.get("backend") != "diffusers":
        raise ValueError(f"{source}: backend {entry.get('backend')!r}: --model runs diffusers models; the built-in "
                         "model runs without --model")
    with _naming(flags, source):
        return parse_entry(entry, base_dir), flags, source


@contextmanager
def _naming(flags: dict[str, str], source: str):
    """Re-raise an entry's ValueError("<field>: ...") naming the flag that set the field, or the entry."""
    try:
        yield
    except ValueError as e:
        field, _, rest = str(e).partition(": ")
        if field in flags:
            raise ValueError(f"{flags[field]}: {rest}") from e
        raise ValueError(f"{source}: {e}") from e


def run_generate(args: argparse.Namespace) -> int:
    """`reelgen generate` with an open model: check everything, load, generate with progress, write."""
    from reelgen.backends.base import GenerationRequest
    from reelgen.backends.diffusers import DiffusersGenerator, ModelLoadError
    from reelgen.backends.images import decode_image
    from reelgen.backends.model_table import parse_size
    from reelgen.rendering.video import check_output_path, write_video

    # 1. the model and every option, checked before any weights load (the generator checks the machine)
    config, flags, source = model_config(args)
    spec = config.spec
    image = None
    if args.image is not None:
        image = args.image.read_bytes()
        decode_image(image)  # a clear error for a file that is not an image, before the model loads
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
        frames=spec.frames_for(spec.default_seconds) if args.frames is None else args.frames,
        steps=spec.default_steps if args.steps is None else args.steps,
        guidance_scale=spec.default_guidance_scale if args.guidance is None else args.guidance,
        sampler=args.sampler or spec.default_sampler,
        size=parse_size(args.size) if args.size is not None else None, image=image)
    fps = spec.fps if args.fps is None else args.fps
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {fps}")
    if args.min_side is not None and not 1 <= args.min_side <= 4096:
        raise ValueError(f"min-side must be between 1 and 4096, got {args.min_side}")
    output, _ = check_output_path(args.output)
    with _naming(flags, source):
        generator = DiffusersGenerator(config)  # checks the machine: the device, its dtypes, packages
    generator.check([request])  # what the model cannot do (text-only, frame counts, sizes, samplers)

    # 2. load, generate, write (the writer replaces the file only once it is complete)
    try:
        generator.load()
    except ModelLoadError as e:
        raise ValueError(str(e)) from e
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=request.steps, desc="denoising", unit="step", mininterval=0, file=sys.stderr)
    try:
        frames = generator.generate([request], on_step=None if bar is None else lambda done, total: bar.update(1))
    finally:
        if bar is not None:
            bar.close()
    video = frames.frames[0]
    write_video(video, output, fps=fps, min_side=args.min_side or min(video.shape[1:3]))
    print(f"wrote {output} ({video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}, {fps} fps, "
          f"model {spec.id}, sampler {request.sampler})")
    return 0
