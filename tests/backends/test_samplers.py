"""What a request's `sampler` means for a diffusers model: the scheduler it runs, or a clear refusal."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from reelgen.backends.base import GenerationRequest
from reelgen.backends.registry import RegistryError, parse_registry
from reelgen.backends.tiny import tiny_registry_entry
from tests.backends.conftest import png_bytes


def _request(spec, sampler, **kw) -> GenerationRequest:
    return GenerationRequest(prompt="a red circle moving left", frames=spec.frame_counts()[-1], steps=2,
                             sampler=sampler, image=png_bytes() if spec.requires_image else None, **kw)


@pytest.mark.parametrize(("family", "default", "samplers"), [
    ("wan", "euler", ("euler", "unipc", "dpm++")),  # the tiny folder ships FlowMatchEulerDiscreteScheduler
    ("wan-i2v", "euler", ("euler", "unipc", "dpm++")),
    ("cogvideox", "ddim", ("ddim", "dpm++")),  # ships CogVideoXDDIMScheduler
    ("ltx", "euler", ("euler",)),
    ("hunyuan-video", "euler", ("euler",)),
    ("svd", "euler", ("euler",)),  # ships EulerDiscreteScheduler
])
def test_each_model_names_its_samplers_and_defaults_to_the_scheduler_its_folder_ships(tiny_registry, family,
                                                                                       default, samplers):
    spec = tiny_registry.spec(f"tiny-{family}")
    assert (spec.default_sampler, spec.samplers) == (default, samplers)


def test_wan_runs_flow_unipc_and_dpm_solver_from_the_shipped_schedule(tiny_registry):
    generator = tiny_registry.generator("tiny-wan")
    spec = generator.spec
    euler = generator.generate([_request(spec, "euler")]).frames
    shipped = generator.pipeline.scheduler
    assert type(shipped).__name__ == "FlowMatchEulerDiscreteScheduler" and shipped.config.shift == 7.0
    videos = {}
    for sampler, cls in (("unipc", "UniPCMultistepScheduler"), ("dpm++", "DPMSolverMultistepScheduler")):
        steps = []
        videos[sampler] = generator.generate([_request(spec, sampler)], on_step=lambda d, t: steps.append(d)).frames
        scheduler = generator.pipeline.scheduler
        assert type(scheduler).__name__ == cls
        # flow mode with the folder's shift: the same noise schedule the model was trained on
        assert (scheduler.config.prediction_type, scheduler.config.use_flow_sigmas, scheduler.config.flow_shift) == \
            ("flow_prediction", True, 7.0)
        assert steps == [1, 2] and videos[sampler].shape == euler.shape
        assert not np.array_equal(videos[sampler], euler)  # another solver takes another path
    assert not np.array_equal(videos["unipc"], videos["dpm++"])
    # back to the default: the shipped scheduler object itself, and the same video as before
    assert np.array_equal(generator.generate([_request(spec, "euler")]).frames, euler)
    assert generator.pipeline.scheduler is shipped


def test_cogvideox_runs_its_own_dpm_scheduler(tiny_registry):
    generator = tiny_registry.generator("tiny-cogvideox")
    ddim = generator.generate([_request(generator.spec, "ddim")]).frames
    dpm = generator.generate([_request(generator.spec, "dpm++")]).frames
    assert type(generator.pipeline.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert dpm.shape == ddim.shape and not np.array_equal(dpm, ddim)


@pytest.mark.parametrize(("family", "sampler", "allowed"), [
    ("wan", "ddim", "euler, unipc, dpm++"),
    ("ltx", "unipc", "euler"),
    ("hunyuan-video", "dpm++", "euler"),
    ("cogvideox", "euler", "ddim, dpm++"),
    ("svd", "dpm++", "euler"),
])
def test_a_sampler_the_schedule_has_no_scheduler_for_is_refused_before_loading(tiny_dirs, family, sampler, allowed):
    generator = parse_registry(tiny_registry_entry(family, tiny_dirs[family])).generator(f"tiny-{family}")
    message = f"model tiny-{family} runs the sampler(s) {allowed}, got {sampler!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        generator.generate([_request(generator.spec, sampler)])
    assert generator.pipeline is None


def test_a_batch_must_share_its_sampler(tiny_registry):
    generator = tiny_registry.generator("tiny-wan")
    with pytest.raises(ValueError, match="a batch must share .*sampler"):
        generator.generate([_request(generator.spec, "euler"), _request(generator.spec, "unipc")])


def test_registry_default_sampler(tiny_dirs):
    registry = parse_registry(tiny_registry_entry("wan", tiny_dirs["wan"], "m", default_sampler="unipc"))
    assert registry.spec("m").default_sampler == "unipc"
    with pytest.raises(RegistryError, match="model 'm': default_sampler: wan models run euler, unipc, dpm.., got "
                                            "'ddim'"):
        parse_registry(tiny_registry_entry("wan", tiny_dirs["wan"], "m", default_sampler="ddim"))
    hub = parse_registry('[[models]]\nid = "h"\nbackend = "diffusers"\nhub_id = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"\n'
                         'family = "wan"\n')
    assert hub.spec("h").default_sampler == "unipc"  # what that release ships


def test_a_folder_shipping_a_scheduler_of_another_kind_is_refused(tiny_dirs, tmp_path):
    folder = tmp_path / "odd-scheduler"
    shutil.copytree(tiny_dirs["wan"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DDPMScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(RegistryError, match="path: the folder ships a DDPMScheduler, which reelgen does not run for "
                                            "wan models; it runs FlowMatchEulerDiscreteScheduler .euler."):
        parse_registry(tiny_registry_entry("wan", folder))


def test_the_api_defaults_to_the_model_sampler_and_answers_400_for_one_it_cannot_run(tiny_registry):
    from reelgen.service.api.create import new_job
    from reelgen.service.api.errors import APIError
    from reelgen.service.api.schemas import VideoCreate

    models = {i: tiny_registry.spec(i) for i in ("tiny-wan", "tiny-cogvideox")}
    job, _ = new_job(VideoCreate(prompt="a red circle", model="tiny-cogvideox"), models, 1 << 20)
    assert job.sampler == "ddim"
    job, _ = new_job(VideoCreate(prompt="a red circle", model="tiny-wan", sampler="dpm++"), models, 1 << 20)
    assert job.sampler == "dpm++"
    with pytest.raises(APIError) as info:
        new_job(VideoCreate(prompt="a red circle", model="tiny-wan", sampler="ddim"), models, 1 << 20)
    error = info.value
    assert (error.status, error.param, error.code) == (400, "sampler", "unsupported_value")
    assert error.message == "Invalid 'sampler': 'ddim' is not supported by tiny-wan; supported values are " \
                            "euler, unipc, dpm++."
