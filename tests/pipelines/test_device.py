"""The built-in pipeline on a chosen device: CPU checks of the code a GPU runs (there is no GPU here)."""

import re

import numpy as np
import pytest
import torch

from reelgen import cli
from reelgen.parallel import run
from reelgen.pipelines.long_video import LongVideoPipeline
from reelgen.pipelines.request import GenerationRequest
from reelgen.pipelines.text_to_video import TextToVideoPipeline
from tests.parallel.ranks import model_inputs
from tests.tiny import make_tiny_model

REQUEST = dict(prompt="a red ball moving left on a black background", seed=3, steps=2)


def test_the_model_builds_every_tensor_of_its_forward_on_the_input_device():
    """On the meta device any tensor made on the CPU inside forward fails the first op that meets it, as it
    would on a GPU (a frequency table built on the CPU did)."""
    model = make_tiny_model().to("meta")
    out = model(*(t.to("meta") for t in model_inputs(frames=8)))
    assert out.device.type == "meta" and out.shape == (1, 3, 8, 16, 16)


@pytest.mark.parametrize("cls, frames", [(TextToVideoPipeline, 8), (LongVideoPipeline, 12)])
def test_device_cpu_gives_the_default_video(tiny_model_dir, text_encoder, cls, frames):
    request = GenerationRequest(frames=frames, **REQUEST)
    default = cls.from_pretrained(tiny_model_dir, text_encoder)
    on_cpu = cls.from_pretrained(tiny_model_dir, text_encoder, device="cpu")
    assert on_cpu.device == torch.device("cpu")
    video = on_cpu([request])
    assert np.array_equal(video, default([request]))
    assert np.array_equal(video, default.to("cpu")([request]))


@pytest.mark.parametrize("device, message", [
    ("meta", "unknown device 'meta'; use cpu, cuda, cuda:N, mps or xpu"),
    ("banana", "unknown device 'banana'"),
    ("cuda:99", "'cuda:99'"),  # not available here; on a GPU machine: "this machine has N CUDA device(s)"
])
def test_a_device_the_machine_lacks_fails_before_loading(tmp_path, text_encoder, device, message):
    with pytest.raises(ValueError, match=message):
        TextToVideoPipeline.from_pretrained(tmp_path / "no-model-here", text_encoder, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_device_flags_without_cuda_stop_before_loading(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    args = ["a red ball", "--model-dir", str(tiny_model_dir), "--device", "cuda", "-o", str(out)]
    message = f"--device cuda: 'cuda' is not available on this machine (torch {torch.__version__})"
    assert cli.main(["generate", *args]) == 2
    assert capsys.readouterr().err == f"reelgen generate: error: {message}\n"
    with pytest.raises(ValueError, match=re.escape(message)):  # its __main__ turns this into status 2
        run.main(args)
    assert not out.exists()


def test_generate_runs_the_built_in_model_on_the_device_given(tiny_model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    assert cli.main(["generate", "a red ball", "--model-dir", str(tiny_model_dir), "--device", "cpu", "--steps", "2",
                     "--quiet", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
