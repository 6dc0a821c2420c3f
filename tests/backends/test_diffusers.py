"""The diffusers backend on tiny random pipelines of every family, loaded through the registry."""

from __future__ import annotations

import re
import threading
import warnings

import numpy as np
import pytest

from reelgen.backends.base import GenerationCancelled, GenerationRequest
from reelgen.backends.tiny import TINY_FRAMES, TINY_SIZES
from tests.backends.conftest import FAMILIES, png_bytes


def _request(spec, **kw) -> GenerationRequest:
    fields = {"prompt": "a red circle moving left", "frames": spec.frame_counts()[-1], "steps": 2,
              "sampler": spec.default_sampler, "image": png_bytes() if spec.requires_image else None} | kw
    return GenerationRequest(**fields)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_steps_give_frames_of_the_right_count_and_size_with_progress_per_step(tiny_registry, family):
    generator = tiny_registry.generator(f"tiny-{family}")
    assert generator.pipeline is None  # lazy: nothing loads until the first request
    spec = generator.spec
    steps = []
    result = generator.generate([_request(spec)], on_step=lambda done, total: steps.append((done, total)))
    width, height = TINY_SIZES[family]
    assert result.frames.shape == (1, spec.frame_counts()[-1], height, width, 3)
    assert result.frames.dtype == np.uint8
    assert result.frames.std() > 0  # random weights, but not a blank video
    assert steps == [(1, 2), (2, 2)]
    assert {"encode", "denoise", "decode"} <= set(result.timings)
    assert tiny_registry.generator(f"tiny-{family}") is generator  # cached
    assert generator.load() == 0.0  # loaded once


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_stops_within_one_step(tiny_registry, family):
    generator = tiny_registry.generator(f"tiny-{family}")
    cancel = threading.Event()
    steps = []

    def on_step(done, total):
        steps.append(done)
        cancel.set()

    with pytest.raises(GenerationCancelled):
        generator.generate([_request(generator.spec, steps=4)], on_step=on_step, cancel=cancel)
    assert steps == [1]


def test_same_seed_same_video_and_batches_keep_each_seed(tiny_registry):
    generator = tiny_registry.generator("tiny-wan")
    spec = generator.spec
    alone = generator.generate([_request(spec, seed=7)]).frames[0]
    assert np.array_equal(generator.generate([_request(spec, seed=7)]).frames[0], alone)
    batch = generator.generate([_request(spec, seed=3), _request(spec, seed=7, prompt="a blue square")]).frames
    other = generator.generate([_request(spec, seed=7, prompt="a blue square")]).frames[0]
    assert np.abs(batch[1].astype(int) - other.astype(int)).max() <= 1


def test_image_changes_the_first_frame(tiny_registry):
    generator = tiny_registry.generator("tiny-svd")
    spec = generator.spec
    red = generator.generate([_request(spec, image=png_bytes(color=(255, 0, 0)))]).frames[0]
    blue = generator.generate([_request(spec, image=png_bytes(color=(0, 0, 255)))]).frames[0]
    assert not np.array_equal(red, blue)


@pytest.mark.parametrize(("model", "change", "message"), [
    ("tiny-wan", {"image": png_bytes()}, "text only; an input image needs an image-to-video model"),
    ("tiny-svd", {"image": None}, "image-to-video only: every request needs an input image"),
    ("tiny-wan-i2v", {"image": None}, "image-to-video only"),
    ("tiny-wan", {"frames": 8}, "generates 5, 9 frames (4k+1), got 8"),
    ("tiny-cogvideox", {"frames": 5}, "generates 9 frames (8k+1), got 5"),
    ("tiny-ltx", {"size": (64, 64)}, "generates sizes 32x32, got 64x64"),
    ("tiny-wan", {"steps": 0}, "steps must be between 1 and"),
    ("tiny-svd", {"image": b"GIF89a not really"}, "not a PNG, JPEG or WebP"),
])
def test_requests_the_model_cannot_do_fail_before_loading(tiny_dirs, model, change, message):
    from reelgen.backends.registry import parse_registry
    from reelgen.backends.tiny import tiny_registry_entry

    family = model.removeprefix("tiny-")
    generator = parse_registry(tiny_registry_entry(family, tiny_dirs[family])).generator(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        generator.generate([_request(generator.spec, **change)])
    assert generator.pipeline is None  # refused before any weights loaded


def test_max_steps_limit(tiny_dirs):
    from reelgen.backends.diffusers import DiffusersGenerator

    generator = DiffusersGenerator.from_pretrained(tiny_dirs["wan"], "w", limits={"sizes": ["16x16"], "max_steps": 3})
    with pytest.raises(ValueError, match="at most 3 steps, got 4"):
        generator.generate([_request(generator.spec, steps=4, frames=9)])


def test_missing_model_folder_is_named(tmp_path):
    from reelgen.backends.registry import RegistryError, parse_registry

    text = f'[[models]]\nid = "gone"\nbackend = "diffusers"\npath = "{tmp_path / "nowhere"}"\n'
    with pytest.raises(RegistryError, match=r"model 'gone': path: .*nowhere does not exist"):
        parse_registry(text)


def test_folder_missing_a_component_is_refused_at_validation(tiny_dirs, tmp_path):
    import shutil

    from reelgen.backends.registry import RegistryError, parse_registry
    from reelgen.backends.tiny import tiny_registry_entry

    broken = tmp_path / "half-copied"
    shutil.copytree(tiny_dirs["wan"], broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(RegistryError, match=r"model 'tiny-wan': path: .* incomplete: component 'transformer'"):
        parse_registry(tiny_registry_entry("wan", broken))


def test_broken_weights_fail_at_load_with_the_model_and_folder_named(tiny_dirs, tmp_path):
    import shutil

    from reelgen.backends.diffusers import ModelLoadError
    from reelgen.backends.registry import parse_registry
    from reelgen.backends.tiny import tiny_registry_entry

    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_dirs["wan"], broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    generator = parse_registry(tiny_registry_entry("wan", broken)).generator("tiny-wan")
    with pytest.raises(ModelLoadError, match=r"could not load model 'tiny-wan' \(WanPipeline\) from .*corrupt"):
        generator.generate([_request(generator.spec)])


def test_folder_of_another_pipeline_is_refused(tiny_dirs):
    from reelgen.backends.registry import RegistryError, parse_registry
    from reelgen.backends.tiny import tiny_registry_entry

    with pytest.raises(RegistryError, match="the folder holds a CogVideoXPipeline, but family 'wan' runs WanPipeline"):
        parse_registry(tiny_registry_entry("wan", tiny_dirs["cogvideox"]))


def test_family_is_read_from_the_folder(tiny_dirs):
    from reelgen.backends.registry import parse_registry

    registry = parse_registry(f'[[models]]\nid = "x"\nbackend = "diffusers"\npath = "{tiny_dirs["ltx"]}"\n')
    assert registry.configs["x"].family == "ltx"
    assert registry.spec("x").fps == 25 and registry.spec("x").default_size == "768x512"


@pytest.fixture(scope="module")
def wan_width_128(tmp_path_factory):
    """A tiny Wan whose linear layers take 128 or 256 inputs: multiples of the int4 group, so they all pack."""
    from reelgen.backends.tiny import tiny_wan

    path = tmp_path_factory.mktemp("wan-width-128")
    tiny_wan(heads=2, head_dim=64, ffn_dim=256).save_pretrained(path)
    return path


@pytest.mark.parametrize(("scheme", "tensor", "max_bytes", "min_sqnr"), [
    ("int8wo", "Int8Tensor", 0.30, 40.0),  # one byte a weight, of float32's four
    ("int4wo", "Int4OpaqueTensor", 0.19, 20.0),  # half a byte a weight, packed for torch's CPU int4 matmul
])
def test_weight_only_quantization_packs_the_transformer_and_keeps_its_output_close(wan_width_128, scheme, tensor,
                                                                                   max_bytes, min_sqnr):
    import torch

    from reelgen.backends.diffusers import DiffusersGenerator
    from reelgen.backends.memory import weight_bytes
    from reelgen.backends.tiny import TINY_CALL_OPTIONS

    def run(memory):
        g = DiffusersGenerator.from_pretrained(wan_width_128, "w", memory=memory, limits={"sizes": ["16x16"]},
                                               call_options=TINY_CALL_OPTIONS["wan"])
        return g, g.generate([_request(g.spec, frames=TINY_FRAMES["wan"])]).frames.astype(float)

    plain, plain_frames = run({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int4wo's warning that float32 inputs make it slow on the CPU
        quantized, frames = run({"quantization": scheme})
    weight = quantized.pipeline.transformer.blocks[0].ffn.net[0].proj.weight
    assert type(weight).__name__ == tensor
    # norms, the patch embedding and the text embedder's 32-wide input layer stay float32
    assert weight_bytes(quantized.pipeline.transformer) < max_bytes * weight_bytes(plain.pipeline.transformer)
    assert np.abs(frames - plain_frames).mean() < 3.0  # of 255
    # the denoiser's own output, as torchao's tests judge a quantized layer: signal-to-quantization-noise ratio
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 3, 4, 4, generator=generator), torch.tensor([500]),
              torch.randn(1, 16, 32, generator=generator))
    with torch.no_grad():
        ref, out = (g.pipeline.transformer(*inputs).sample for g in (plain, quantized))
    assert 20 * torch.log10(ref.norm() / (ref - out).norm()) > min_sqnr


def test_int4_on_the_cpu_warns_that_float32_makes_it_slow(tiny_dirs):
    from reelgen.backends.registry import parse_entry

    entry = {"id": "w", "backend": "diffusers", "path": str(tiny_dirs["wan"]), "memory": {"quantization": "int4wo"}}
    with pytest.warns(UserWarning, match="int4wo on the CPU with float32"):
        parse_entry(entry)


@pytest.mark.parametrize(("family", "cache"), [("wan", "first_block_cache"), ("cogvideox", "faster_cache"),
                                               ("ltx", "pyramid_attention_broadcast")])
def test_step_caches_run(tiny_dirs, family, cache):
    from reelgen.backends.diffusers import DiffusersGenerator
    from reelgen.backends.tiny import TINY_CALL_OPTIONS

    width, height = TINY_SIZES[family]
    g = DiffusersGenerator.from_pretrained(tiny_dirs[family], "c", memory={"step_cache": cache}, fps=8,
                                           limits={"sizes": [f"{width}x{height}"], "max_frames": 9},
                                           call_options=TINY_CALL_OPTIONS[family])
    frames = g.generate([_request(g.spec, steps=4)]).frames
    assert frames.shape[1] == 9
    assert g.pipeline.transformer.is_cache_enabled
