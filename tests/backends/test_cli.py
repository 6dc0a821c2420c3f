"""`reelgen generate` with open models: tiny pipelines of each family, run through the CLI, decoded back."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from reelgen.backends.tiny import TINY_SIZES, tiny_registry_entry
from reelgen.cli import main
from reelgen.rendering.video import read_video
from tests.backends.conftest import FAMILIES, png_bytes

# Frames each tiny entry makes by default: 1 second at 8 fps, rounded up to the family's frame rule
DEFAULT_FRAMES = {"wan": 9, "wan-i2v": 9, "cogvideox": 9, "ltx": 9, "hunyuan-video": 9, "svd": 8}


@pytest.fixture(scope="module")
def models_file(tiny_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "models.toml"
    path.write_text("".join(tiny_registry_entry(f, p) for f, p in tiny_dirs.items()))
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "first.png"
    path.write_bytes(png_bytes(size=(48, 40), color=(220, 30, 30)))
    return path


def generate(*args) -> int:
    try:
        return main(["generate", *map(str, args)])
    except SystemExit as e:  # argparse refuses unknown choices itself
        return e.code


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_writes_an_mp4_of_the_right_frames_and_size_with_progress_per_step(models_file, image, tmp_path,
                                                                                       capsys, family):
    out = tmp_path / "clip.mp4"
    extra = ["--image", image] if family in ("wan-i2v", "svd") else []
    assert generate("a red circle moving left", "--model", f"tiny-{family}", "--models-file", models_file,
                    "--steps", "2", "-o", out, *extra) == 0
    frames, fps = read_video(out)
    width, height = TINY_SIZES[family]
    assert frames.shape == (DEFAULT_FRAMES[family], height, width, 3)
    assert fps == 8  # the entry's native rate
    captured = capsys.readouterr()
    assert re.search(r"denoising: +50%.*1/2", captured.err) and re.search(r"denoising: 100%.*2/2", captured.err)
    assert f"wrote {out} ({DEFAULT_FRAMES[family]} frames of {width}x{height}, 8 fps, model tiny-{family}" in \
        captured.out


def test_model_path_with_memory_and_speed_flags(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "clip.webm"
    code = generate("a blue square", "--model-path", tiny_dirs["wan"], "--size", "16x16", "--frames", "5",
                    "--steps", "2", "--sampler", "unipc", "--fps", "5", "--min-side", "32", "--vae-tiling",
                    "--vae-slicing", "--quantize", "int8-weight", "--cache", "first-block", "--cache-threshold", "0.1",
                    "--attention-backend", "native", "--quiet", "-o", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 32, 3) and fps == 5  # upscaled to --min-side
    assert "sampler unipc" in captured.out and captured.err == ""  # --quiet: no progress bar


@pytest.mark.parametrize(("args", "message"), [
    # options this machine cannot run: one message naming the flag
    (["--quantize", "fp8"], "--quantize fp8: fp8: float8 matmuls need an NVIDIA GPU with compute capability 8.9+"),
    (["--quantize", "int4", "--device", "mps"], "--quantize int4: int4wo: torchao packs int4 weights for the CPU and "
                                                "for CUDA GPUs only"),
    (["--cpu-offload", "model"], "--cpu-offload model: offloading moves weights between the CPU and a GPU"),
    (["--cpu-offload", "sequential"], "--cpu-offload sequential: offloading moves weights"),
    (["--dtype", "float16"], "--dtype float16: float16 on the CPU is unusably slow"),
    (["--device", "cuda"], "--device cuda: 'cuda' is not available on this machine"),
    (["--attention-backend", "flash"], "--attention-backend flash: 'flash' needs a GPU"),
    (["--cache", "fastercache"], "--cache fastercache: wan models do not support faster_cache"),
    (["--cache-threshold", "0.1"], "--cache-threshold: only with --cache first-block"),
    # requests the model cannot do
    (["--image", "{image}"], "model tiny-wan generates from text only; an input image needs an image-to-video model"),
    (["--sampler", "ddim"], "model tiny-wan runs the sampler(s) euler, unipc, dpm++, got 'ddim'"),
    (["--frames", "8"], "model tiny-wan generates 5, 9 frames (4k+1), got 8"),
    (["--size", "32x32"], "model tiny-wan generates sizes 16x16, got 32x32"),
    (["--fps", "0"], "fps must be between 1 and 120, got 0"),
    (["--family", "wan"], "--family: only with --model-path"),
])
def test_what_cannot_run_fails_with_one_clear_message_before_loading(models_file, image, tmp_path, capsys, args,
                                                                      message):
    out = tmp_path / "clip.mp4"
    args = [str(image) if a == "{image}" else a for a in args]
    assert generate("a red circle", "--model", "tiny-wan", "--models-file", models_file, "-o", out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("reelgen generate: error: ") and message in err, err
    assert err.count("\n") == 1  # one line, no traceback
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--model-path", "{tmp}/nowhere"], "nowhere: path: {tmp}/nowhere does not exist or is not a folder"),
    (["--model", "tiny-wan"], "--model and --models-file go together"),
    (["--model", "sora", "--models-file", "{models}"], "has no model 'sora'; it names tiny-wan, tiny-wan-i2v"),
    (["--models-file", "{tmp}/none.toml", "--model", "x"], "cannot read model registry {tmp}/none.toml"),
    (["--image", "{image}"], "--image: only for open models"),
    (["--quantize", "int8-weight"], "--quantize: only for open models"),
])
def test_missing_models_and_flags_without_a_model(models_file, image, tmp_path, capsys, args, message):
    def fill(s: str) -> str:
        return s.replace("{tmp}", str(tmp_path)).replace("{models}", str(models_file)).replace("{image}", str(image))

    assert generate("a red circle", "-o", tmp_path / "clip.mp4", *map(fill, args)) == 2
    err = capsys.readouterr().err
    assert fill(message) in err, err


def test_a_registry_entry_with_an_option_this_machine_lacks_names_the_file_and_field(tiny_dirs, tmp_path, capsys):
    path = tmp_path / "models.toml"
    path.write_text(tiny_registry_entry("wan", tiny_dirs["wan"], "gpu-wan", memory={"cpu_offload": True}))
    assert generate("a red circle", "--model", "gpu-wan", "--models-file", path, "-o", tmp_path / "a.mp4") == 2
    assert f"{path}: model 'gpu-wan': memory.cpu_offload: offloading moves weights" in capsys.readouterr().err


def test_a_broken_model_folder_fails_cleanly(tiny_dirs, tmp_path, capsys):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_dirs["wan"], broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    out = tmp_path / "clip.mp4"
    assert generate("a red circle", "--model-path", broken, "-o", out) == 2
    err = capsys.readouterr().err
    assert f"could not load model 'corrupt' (WanPipeline) from {broken}" in err and err.count("\n") == 1
    shutil.rmtree(broken / "vae")
    assert generate("a red circle", "--model-path", broken, "-o", out) == 2
    assert "is incomplete: component 'vae'" in capsys.readouterr().err
    assert not out.exists()


def test_exit_status_and_message_of_the_real_command(models_file, tmp_path):
    r = subprocess.run([sys.executable, "-m", "reelgen.cli", "generate", "a red circle", "--model", "tiny-wan",
                        "--models-file", str(models_file), "--quantize", "fp8", "-o", str(tmp_path / "a.mp4")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("reelgen generate: error: --quantize fp8: fp8: float8 matmuls need an NVIDIA GPU")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: shutil.rmtree(folder), "path: {folder} does not exist or is not a folder"),
    (lambda folder: shutil.rmtree(folder / "vae"), "path: {folder} is incomplete: component 'vae'"),
])
def test_serve_refuses_a_missing_or_half_copied_model_folder(tiny_dirs, tmp_path, damage, message):
    folder = tmp_path / "wan"
    shutil.copytree(tiny_dirs["wan"], folder)
    damage(folder)
    models = tmp_path / "models.toml"
    models.write_text(tiny_registry_entry("wan", folder))
    # the real command: serve configures the process's logging, which must not leak into other tests
    r = subprocess.run([sys.executable, "-m", "reelgen.cli", "serve", "--models-file", str(models), "--data-dir",
                        str(tmp_path / "data"), "--port", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    last = r.stderr.splitlines()[-1]  # after the log lines of starting up
    assert last.startswith(f"reelgen serve: error: {models}: model 'tiny-wan': " + message.format(folder=folder)), \
        r.stderr
