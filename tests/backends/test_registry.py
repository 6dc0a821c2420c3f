"""models.toml: validation names the file, the model and the field; options a machine cannot run are refused early."""

from __future__ import annotations

import pytest

from reelgen.backends.registry import RegistryError, load_registry, parse_registry
from reelgen.backends.tiny import tiny_registry_entry


def _error(text: str) -> str:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, source="models.toml")
    return str(info.value)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from reelgen.backends.tiny import save_tiny_pipeline

    return save_tiny_pipeline("wan", tmp_path_factory.mktemp("registry") / "wan")


def _wan(wan_dir, extra: str = "", **fields) -> str:
    return tiny_registry_entry("wan", wan_dir, "m", **fields) + extra


def test_parse_and_load_from_a_file_with_relative_paths(wan_dir):
    toml = wan_dir.parent / "models.toml"
    toml.write_text('[[models]]\nid = "shapes"\nbackend = "builtin"\ndescription = "moving shapes"\n\n'
                    + tiny_registry_entry("wan", wan_dir.name, "wan-tiny", description="tiny Wan"))
    registry = load_registry(toml)
    assert registry.ids == ["shapes", "wan-tiny"]
    assert registry.configs["wan-tiny"].path == str(wan_dir)
    spec = registry.spec("wan-tiny")
    assert (spec.description, spec.fps, spec.sizes, spec.frames_step, spec.frames_offset) == \
        ("tiny Wan", 8, ("16x16",), 4, 1)
    assert spec.seconds == ("1",) and spec.frames_for("1") == 9
    assert (registry.spec("shapes").id, registry.spec("shapes").description) == ("shapes", "moving shapes")
    generators = registry.generators()
    assert [g.spec.id for g in generators] == ["shapes", "wan-tiny"]
    assert registry.generator("wan-tiny") is generators[1]
    with pytest.raises(LookupError, match="unknown model 'nope'; this registry serves shapes, wan-tiny"):
        registry.generator("nope")


@pytest.mark.parametrize(("entry", "message"), [
    ('[[models]]\nbackend = "diffusers"\n', "model #1: id: required"),
    ('[[models]]\nid = "a b"\nbackend = "diffusers"\n', "model 'a b': id: required, 1-64 letters"),
    ('[[models]]\nid = "a"\nbackend = "onnx"\n', "model 'a': backend: choose builtin or diffusers, got 'onnx'"),
    ('[[models]]\nid = "a"\nbackend = "builtin"\npath = "/no/such/model"\n',
     "model 'a': path: /no/such/model is not a reelgen model folder (no config.json)"),
    ('[[models]]\nid = "a"\nbackend = "builtin"\ndtype = "float16"\n',
     "model 'a': unknown field(s) dtype; allowed: id, backend, path, description"),
    ('[[models]]\nid = "a"\nbackend = "diffusers"\nhub_id = "org/model"\n', "model 'a': family: required for hub ids"),
    ('[[models]]\nid = "a"\nbackend = "diffusers"\nhub_id = "not a hub id"\nfamily = "wan"\n',
     "model 'a': hub_id: expected 'organization/name'"),
    ('[[models]]\nid = "a"\nbackend = "diffusers"\nhub_id = "o/m"\nfamily = "sora"\n',
     "model 'a': family: unknown family 'sora'; choose one of wan, wan-i2v, cogvideox, ltx, hunyuan-video, svd"),
    ('[model]\nid = "a"\n', "unknown top-level key(s) model; models go in [[models]] tables"),
    ('[[models]\n', "not valid TOML"),
    ("", "no [[models]] entries"),
])
def test_structure_errors_name_the_model_and_field(entry, message):
    assert message in _error(entry)


def test_duplicate_ids(wan_dir):
    assert "model id(s) m appear more than once" in _error(_wan(wan_dir) + _wan(wan_dir))


@pytest.mark.parametrize(("fields", "message"), [
    ({"dtype": "float64"}, "dtype: choose one of float32, float16, bfloat16, got 'float64'"),
    ({"device": "tpu"}, "device: use cpu, cuda, cuda:N, mps or xpu, got 'tpu'"),
    ({"dtype": "float16"}, "dtype: float16 on the CPU is unusably slow"),
    ({"memory": {"cpu_offload": True}}, "memory.cpu_offload: offloading moves weights between the CPU and a GPU"),
    ({"memory": {"sequential_offload": True}}, "memory.sequential_offload: offloading moves weights"),
    ({"device": "cuda", "memory": {"cpu_offload": True, "sequential_offload": True}},
     "memory.sequential_offload: choose one of cpu_offload and sequential_offload"),
    ({"memory": {"quantization": "fp8"}}, "memory.quantization: fp8: float8 matmuls need an NVIDIA GPU with compute "
                                          "capability 8.9+"),
    ({"device": "mps", "memory": {"quantization": "int4wo"}}, "memory.quantization: int4wo: torchao packs int4 "
                                                               "weights for the CPU and for CUDA GPUs only"),
    ({"device": "cuda", "memory": {"quantization": "int4wo"}}, "memory.quantization: int4wo: the CUDA int4 kernel "
                                                                "(tinygemm) takes bfloat16 only"),
    ({"memory": {"quantization": "int3"}}, "memory.quantization: choose one of int8wo, int8dq, fp8wo, fp8, int4wo"),
    ({"memory": {"attention_backend": "flash"}}, "memory.attention_backend: 'flash' needs a GPU; on the CPU choose "
                                                 "one of native, _native_math, flex"),
    ({"memory": {"step_cache": "faster_cache"}}, "memory.step_cache: wan models do not support faster_cache "
                                                 "(supported: first_block_cache, pyramid_attention_broadcast)"),
    ({"memory": {"step_cache_options": {"threshold": 0.1}}}, "memory.step_cache_options: set memory.step_cache too"),
    ({"memory": {"vae_tiling": "yes"}}, "memory.vae_tiling: expected bool, got 'yes'"),
    ({"memory": {"offload": True}}, "memory.unknown field(s) offload"),
    ({"limits": {"sizes": ["20x20"]}}, "limits: size '20x20': wan models need width and height divisible by 16"),
    ({"limits": {"sizes": ["16x16"], "max_frames": 10}}, "limits: max_frames 10: wan models generate 4k+1 frames"),
    ({"limits": {"sizes": ["16x16"], "max_steps": 500}}, "limits.max_steps: must be between 1 and 200, got 500"),
    ({"default_size": "32x32"}, "limits: default_size '32x32' is not one of the sizes 16x16"),
    ({"default_seconds": "3"}, "limits: default_seconds '3' is not one of 1 (max_frames 9 at 8 fps)"),
    ({"fps": 0}, "fps: must be between 1 and 120, got 0"),
    ({"fps": True}, "fps: expected int, got True"),
    ({"call_options": {"num_frames": 3}}, "call_options: num_frames come from each request, not the registry"),
])
def test_invalid_values_and_options_this_machine_cannot_run(wan_dir, fields, message):
    assert f"models.toml: model 'm': {message}" in _error(_wan(wan_dir, **fields))


def test_svd_memory_options_point_to_its_own_knob(tmp_path_factory):
    from reelgen.backends.tiny import save_tiny_pipeline

    path = save_tiny_pipeline("svd", tmp_path_factory.mktemp("svd") / "svd")
    assert "memory.vae_tiling: the svd VAE does not support it; set call_options.decode_chunk_size instead" in \
        _error(tiny_registry_entry("svd", path, "m", memory={"vae_tiling": True}))
    assert "memory.step_cache: svd models do not support first_block_cache (supported: none)" in \
        _error(tiny_registry_entry("svd", path, "m", memory={"step_cache": "first_block_cache"}))


def test_bfloat16_on_the_cpu_warns(wan_dir):
    with pytest.warns(UserWarning, match="bfloat16 on the CPU"):
        parse_registry(_wan(wan_dir, dtype="bfloat16"))


def test_a_gpu_this_machine_lacks_is_refused_when_the_generator_is_built(wan_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    registry = parse_registry(_wan(wan_dir, device="cuda", dtype="bfloat16", memory={"cpu_offload": True}))
    with pytest.raises(RegistryError, match="model 'm': device: 'cuda' is not available on this machine"):
        registry.generator("m")


def test_unknown_step_cache_option_is_named(wan_dir):
    from reelgen.backends.tiny import TINY_FRAMES

    from reelgen.backends.base import GenerationRequest

    registry = parse_registry(_wan(wan_dir, memory={"step_cache": "first_block_cache",
                                                    "step_cache_options": {"treshold": 0.1}}))
    with pytest.raises(ValueError, match="FirstBlockCacheConfig has no field.s. treshold"):
        registry.generator("m").generate([GenerationRequest(prompt="a", frames=TINY_FRAMES["wan"], steps=1)])


def test_registry_parsing_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from reelgen.backends import registry, images, model_table; "
            "registry.parse_registry('[[models]]\\nid = \"a\"\\nbackend = \"builtin\"\\n'); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
