"""The model registry: a TOML file naming the models a service serves, validated up front, loaded lazily.

    [[models]]
    id = "wan2.1-t2v-1.3b"                      # the API's `model` value
    backend = "diffusers"                        # or "builtin"
    path = "/models/Wan2.1-T2V-1.3B-Diffusers"   # a diffusers folder (relative: to this file); or hub_id = "org/name"
    family = "wan"                               # optional for folders: read from model_index.json
    dtype = "bfloat16"                           # float32 (default) | float16 | bfloat16
    device = "cuda"                              # cpu (default) | cuda | cuda:N | mps | xpu
    default_steps = 30                           # also: description, fps, default_size, default_seconds,
                                                 #       default_guidance_scale, default_sampler (default: the
                                                 #       sampler of the scheduler the folder ships)
    [models.limits]
    sizes = ["832x480", "480x832"]               # a subset of the family's, or others on its size grid
    max_frames = 81
    max_steps = 50
    [models.memory]                              # see backends.memory.MemoryOptions
    cpu_offload = true
    vae_tiling = true
    quantization = "int8wo"
    step_cache = "first_block_cache"
    step_cache_options = { threshold = 0.08 }
    [models.call_options]                        # extra keyword arguments for the pipeline's __call__
    max_sequence_length = 226

Plain Python (no torch): parsing checks structure, values and everything knowable from the file and the
model folders (a CPU device with offloading, float16 on a CPU, fp8 without a GPU, a step cache the
model lacks). Building a model's generator checks the machine (GPU present, packages), before weights load.
"""

from __future__ import annotations

import json
import re
import threading
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reelgen.backends.base import Generator, ModelSpec
from reelgen.backends.memory import DTYPES, MemoryOptions, check_options
from reelgen.backends.model_table import FAMILIES, FAMILY_BY_PIPELINE, ModelFamily, family_spec
from reelgen.pipelines.request import MAX_STEPS


class RegistryError(ValueError):
    """A models.toml (or model options) problem, naming the file, the model and the field."""


@dataclass(frozen=True)
class BuiltinConfig:
    id: str
    path: Path | None = None  # a reelgen model folder; None: the packaged weights
    description: str | None = None  # None: the built-in model's own


@dataclass(frozen=True)
class DiffusersConfig:
    id: str
    path: str  # a local diffusers folder, or a hub id when hub is True
    family: str  # a key of model_table.FAMILIES
    spec: ModelSpec
    dtype: str = "float32"
    device: str = "cpu"
    hub: bool = False  # path is a hub id: from_pretrained uses the local cache, or the network if it has one
    max_steps: int = MAX_STEPS
    memory: MemoryOptions = MemoryOptions()
    call_options: dict[str, Any] = field(default_factory=dict)

    @property
    def model_family(self) -> ModelFamily:
        return FAMILIES[self.family]


ModelConfig = BuiltinConfig | DiffusersConfig

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_COMMON = ("id", "backend", "path", "description")
_SPEC_KEYS = ("fps", "default_size", "default_seconds", "default_steps", "default_guidance_scale", "default_sampler")
_DIFFUSERS = (*_COMMON, "hub_id", "family", "pipeline", "dtype", "device", *_SPEC_KEYS, "limits", "memory",
              "call_options")
_LIMITS = ("sizes", "max_frames", "max_steps")
# __call__ arguments reelgen sets from the request; call_options may not set them
RESERVED_CALL_OPTIONS = frozenset({
    "prompt", "negative_prompt", "image", "height", "width", "num_frames", "num_inference_steps", "generator",
    "output_type", "return_dict", "callback_on_step_end", "callback_on_step_end_tensor_inputs", "latents",
    "num_videos_per_prompt", "guidance_scale", "max_guidance_scale", "frame_rate", "fps"})


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def _typed(table: dict, key: str, kind: type | tuple[type, ...], default: Any = None, where: str = "") -> Any:
    value = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        raise ValueError(f"{where}{key}: expected {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _read_model_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not folder.is_dir():
        raise ValueError(f"path: {folder} does not exist or is not a folder")
    if not index.is_file():
        raise ValueError(f"path: {folder} is not a diffusers pipeline folder (no model_index.json)")
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"path: {index} is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        raise ValueError(f"path: {index} names no pipeline class (_class_name)")
    # every component listed must be there: a half-copied download fails here, not deep inside from_pretrained
    for name, value in data.items():
        if not name.startswith("_") and isinstance(value, list) and value[0] is not None:
            sub = folder / name
            if not sub.is_dir() or not any(sub.iterdir()):
                raise ValueError(f"path: {folder} is incomplete: component {name!r} (listed in model_index.json) "
                                 f"has no files in {sub}")
    return data


def _resolve_family(entry: dict, folder_class: str | None) -> str:
    family = _typed(entry, "family", str)
    pipeline = _typed(entry, "pipeline", str)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family: unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    for where, cls in (("pipeline", pipeline), ("path", folder_class)):
        if cls is None:
            continue
        if cls not in FAMILY_BY_PIPELINE:
            what = f"the folder holds a {cls}" if where == "path" else f"unknown pipeline {cls!r}"
            raise ValueError(f"{where}: {what}; reelgen serves {', '.join(FAMILY_BY_PIPELINE)}")
        if family is not None and FAMILY_BY_PIPELINE[cls] != family:
            raise ValueError(f"{where}: {'the folder holds a' if where == 'path' else 'pipeline'} {cls}, but family "
                             f"{family!r} runs {FAMILIES[family].pipeline}")
        family = FAMILY_BY_PIPELINE[cls]
    if family is None:
        raise ValueError("family: required for hub ids (one of " + ", ".join(FAMILIES) + ")")
    return family


def parse_entry(entry: dict, base_dir: Path = Path(".")) -> ModelConfig:
    """One [[models]] table -> its config. ValueError("<field>: <problem>") on the first problem found."""
    model_id = _typed(entry, "id", str)
    if model_id is None or not _ID.fullmatch(model_id):
        raise ValueError(f"id: required, 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, "
                         f"got {model_id!r}")
    backend = _typed(entry, "backend", str)
    if backend not in ("builtin", "diffusers"):
        raise ValueError(f"backend: choose builtin or diffusers, got {backend!r}")
    path = _typed(entry, "path", str)
    if backend == "builtin":
        _check_keys(entry, _COMMON, "")
        folder = None if path is None else (base_dir / path).expanduser()
        if folder is not None and not (folder / "config.json").is_file():
            raise ValueError(f"path: {folder} is not a reelgen model folder (no config.json)")
        return BuiltinConfig(id=model_id, path=folder, description=_typed(entry, "description", str))

    _check_keys(entry, _DIFFUSERS, "")
    hub_id = _typed(entry, "hub_id", str)
    if (path is None) == (hub_id is None):
        raise ValueError("path: give exactly one of path (a local diffusers folder) and hub_id")
    folder_class = shipped_scheduler = None
    if hub_id is not None:
        if not _HUB_ID.fullmatch(hub_id):
            raise ValueError(f"hub_id: expected 'organization/name', got {hub_id!r}")
        location = hub_id
    else:
        folder = (base_dir / path).expanduser()
        index = _read_model_index(folder)
        folder_class = index["_class_name"]
        scheduler = index.get("scheduler")
        shipped_scheduler = scheduler[1] if isinstance(scheduler, list) and len(scheduler) == 2 else None
        location = str(folder)
    family = FAMILIES[_resolve_family(entry, folder_class)]
    # A request that names no sampler runs the scheduler the folder ships, untouched
    shipped_sampler = None if shipped_scheduler is None else family.sampler_of(shipped_scheduler)
    if shipped_scheduler is not None and shipped_sampler is None:
        known = ", ".join(f"{cls} ({name})" for name, cls in family.schedulers)
        raise ValueError(f"path: the folder ships a {shipped_scheduler}, which reelgen does not run for "
                         f"{family.name} models; it runs {known}")

    device = _typed(entry, "device", str, "cpu")
    if not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", device):
        raise ValueError(f"device: use cpu, cuda, cuda:N, mps or xpu, got {device!r}")
    dtype = _typed(entry, "dtype", str, "float32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: choose one of {', '.join(DTYPES)}, got {dtype!r}")

    limits = _typed(entry, "limits", dict, {})
    _check_keys(limits, _LIMITS, "limits.")
    sizes = _typed(limits, "sizes", list, where="limits.")
    if sizes is not None and (not sizes or not all(isinstance(s, str) for s in sizes)):
        raise ValueError(f"limits.sizes: expected a non-empty list of 'WxH' strings, got {sizes!r}")
    max_steps = _typed(limits, "max_steps", int, MAX_STEPS, "limits.")
    if not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"limits.max_steps: must be between 1 and {MAX_STEPS}, got {max_steps}")
    spec_args = {key: _typed(entry, key, kind) for key, kind in
                 (("description", str), ("fps", int), ("default_size", str), ("default_seconds", str),
                  ("default_steps", int), ("default_guidance_scale", (int, float)), ("default_sampler", str))}
    if spec_args["default_sampler"] is None:
        spec_args["default_sampler"] = shipped_sampler
    elif spec_args["default_sampler"] not in family.samplers:
        raise ValueError(f"default_sampler: {family.name} models run {', '.join(family.samplers)}, got "
                         f"{spec_args['default_sampler']!r}")
    if spec_args["fps"] is not None and not 1 <= spec_args["fps"] <= 120:
        raise ValueError(f"fps: must be between 1 and 120, got {spec_args['fps']}")
    if spec_args["default_steps"] is not None and not 1 <= spec_args["default_steps"] <= max_steps:
        raise ValueError(f"default_steps: must be between 1 and limits.max_steps ({max_steps})")
    if spec_args["default_guidance_scale"] is not None and not spec_args["default_guidance_scale"] >= 0:
        raise ValueError("default_guidance_scale: must be >= 0")
    try:
        spec = family_spec(family, model_id, max_frames=_typed(limits, "max_frames", int, where="limits."),
                           sizes=None if sizes is None else tuple(sizes), **spec_args)
    except ValueError as e:
        raise ValueError(f"limits: {e}") from e

    memory_table = _typed(entry, "memory", dict, {})
    _check_keys(memory_table, MemoryOptions.field_names(), "memory.")
    for name in MemoryOptions.field_names():
        kind = {"attention_backend": str, "quantization": str, "step_cache": str, "step_cache_options": dict}.get(
            name, bool)
        _typed(memory_table, name, kind, where="memory.")
    memory = MemoryOptions(**memory_table)
    check_options(memory, family, device=device, dtype=dtype)

    call_options = _typed(entry, "call_options", dict, {})
    reserved = sorted(set(call_options) & RESERVED_CALL_OPTIONS)
    if reserved:
        raise ValueError(f"call_options: {', '.join(reserved)} come from each request, not the registry")
    return DiffusersConfig(id=model_id, path=location, family=family.name, spec=spec, dtype=dtype, device=device,
                           hub=hub_id is not None, max_steps=max_steps, memory=memory, call_options=call_options)


def build_generator(config: ModelConfig) -> Generator:
    """A Generator for one model; checks the machine can run it, loads no weights (that is Generator.load)."""
    if isinstance(config, BuiltinConfig):
        from reelgen.backends.builtin import BuiltinGenerator

        generator = BuiltinGenerator(config.path, model_id=config.id)
        if config.description:
            generator.spec = replace(generator.spec, description=config.description)
        return generator
    from reelgen.backends.diffusers import DiffusersGenerator

    return DiffusersGenerator(config)


class ModelRegistry:
    """The models a service serves. Generators are built on first use and cached; weights load on first generate."""

    def __init__(self, configs: list[ModelConfig], source: str = "models.toml"):
        ids = [c.id for c in configs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise RegistryError(f"{source}: model id(s) {', '.join(duplicates)} appear more than once")
        if not configs:
            raise RegistryError(f"{source}: no [[models]] entries")
        self.source = source
        self.configs = {c.id: c for c in configs}
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return list(self.configs)

    def spec(self, model_id: str) -> ModelSpec:
        config = self._config(model_id)
        return config.spec if isinstance(config, DiffusersConfig) else self.generator(model_id).spec

    def generator(self, model_id: str) -> Generator:
        config = self._config(model_id)
        with self._lock:
            if model_id not in self._generators:
                try:
                    self._generators[model_id] = build_generator(config)
                except (ValueError, OSError) as e:
                    raise RegistryError(f"{self.source}: model {model_id!r}: {e}") from e
            return self._generators[model_id]

    def generators(self) -> list[Generator]:
        """Every model's generator, in file order: checks each can run here (no weights load)."""
        return [self.generator(i) for i in self.configs]

    def _config(self, model_id: str) -> ModelConfig:
        if model_id not in self.configs:
            raise LookupError(f"unknown model {model_id!r}; this registry serves {', '.join(self.configs)}")
        return self.configs[model_id]


def parse_registry(text: str, *, source: str = "models.toml", base_dir: str | Path = ".") -> ModelRegistry:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{source}: not valid TOML: {e}") from e
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise RegistryError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; models go in [[models]] tables")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: models must be an array of tables ([[models]])")
    configs = []
    for n, entry in enumerate(entries, 1):
        name = f"model {entry.get('id')!r}" if isinstance(entry.get("id"), str) else f"model #{n}"
        try:
            configs.append(parse_entry(entry, Path(base_dir)))
        except ValueError as e:
            raise RegistryError(f"{source}: {name}: {e}") from e
    return ModelRegistry(configs, source)


def load_registry(path: str | Path) -> ModelRegistry:
    """Read and validate a models.toml; relative model paths are resolved against its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RegistryError(f"cannot read model registry {path}: {e.strerror or e}") from e
    return parse_registry(text, source=str(path), base_dir=path.parent)
