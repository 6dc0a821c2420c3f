"""diffusers' own context parallelism over two gloo processes on the CPU, and the early failures around it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from reelgen.backends.tiny import tiny_cogvideox, tiny_ltx, tiny_registry_entry, tiny_wan
from reelgen.parallel.diffusers_cp import (ContextParallelError, Layout, bytes_per_forward, check, check_size,
                                           sequence_length)

PROMPT = "a red circle moving left"
FRAMES, SIZE, STEPS = 9, 32, 2  # 3 latent frames of 2x2 patches: 12 tokens, 6 per rank


def run_wan(count_bytes: bool = False):
    """The tiny Wan pipeline's frames, float32 in [0, 1]; context-parallel over the job's ranks when there are several."""
    import torch.distributed as td

    from reelgen.parallel.comm import Traffic
    from reelgen.parallel.diffusers_cp import count_traffic, enable_context_parallel

    pipe = tiny_wan()
    pipe.set_progress_bar_config(disable=True)
    if td.is_initialized() and td.get_world_size() > 1:
        enable_context_parallel(pipe, Layout(ulysses=td.get_world_size()))
    traffic = Traffic()
    with count_traffic(traffic):
        frames = pipe(PROMPT, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                      max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="pt").frames
    return frames, traffic.bytes_sent


def test_sequence_length_follows_the_vae_and_patches():
    pipe = tiny_wan()
    assert sequence_length(pipe, FRAMES, SIZE, SIZE) == 12  # (9-1)/4+1 = 3 latent frames x (32/8/2)^2 patches
    assert sequence_length(tiny_cogvideox(), 9, 16, 16) is None  # a layout this module does not know


def test_uneven_tokens_fail_before_the_first_step():
    with pytest.raises(ContextParallelError, match="9 frames of 16x16 make 3 tokens, which do not split evenly "
                                                   "over 2 ranks"):
        check_size(tiny_wan(), Layout(ulysses=2), 9, 16, 16)


def test_models_without_a_cp_plan_are_named():
    with pytest.raises(ContextParallelError, match=r"CogVideoXTransformer3DModel declares no _cp_plan in diffusers "
                                                   r".*the models that do: .*WanTransformer3DModel"):
        check(tiny_cogvideox(), Layout(ulysses=2))


def test_ltx_fails_early_with_the_diffusers_bug_named():
    with pytest.raises(ContextParallelError, match="LTXVideoTransformer3DModel cannot run context-parallel in "
                                                   r"diffusers .*issue #14316"):
        check(tiny_ltx(), Layout(ulysses=2))


def test_ring_on_the_cpu_attention_backend_is_refused():
    with pytest.raises(ContextParallelError, match="'native' attention backend does not return"):
        check(tiny_wan(), Layout(ring=2))


def test_heads_and_ranks_must_fit():
    with pytest.raises(ContextParallelError, match="has 2, not divisible by ulysses degree 4"):
        check(tiny_wan(), Layout(ulysses=4))
    with pytest.raises(ContextParallelError, match="needs 2 ranks, the job has 1"):
        check(tiny_wan(), Layout(ulysses=2))


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process():
    from reelgen.parallel.launch import run_ranks

    alone, _ = run_ranks(run_wan, 1)[0]
    (first, sent), (second, _) = run_ranks(run_wan, 2)
    diff = (first - alone).abs().max().item()
    print(f"max abs diff, 2 ranks vs 1 process: {diff:.3g}")  # 0 on torch 2.13 / diffusers 0.42.1
    assert diff <= 1e-5
    assert torch.equal(first, second)
    # Each of the 2 steps runs the transformer twice (guidance's two passes, batch 1 each).
    assert sent == STEPS * 2 * bytes_per_forward(tiny_wan().transformer.config, tokens=12, batch=1, ranks=2)


@pytest.fixture(scope="module")
def wan_registry(tmp_path_factory):
    from reelgen.backends.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-wan-cp")
    save_tiny_pipeline("wan", root / "wan")
    registry = root / "models.toml"
    registry.write_text(tiny_registry_entry("wan", root / "wan", limits={"sizes": ["32x32", "16x16"],
                                                                         "max_frames": 9}))
    return registry


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "reelgen.parallel.run",
           PROMPT, "--model", "tiny-wan", "--threads", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_writes_a_diffusers_video_from_two_ranks(wan_registry, tmp_path):
    from reelgen.rendering.video import read_video

    out = tmp_path / "wan.mp4"
    done = torchrun("--models-file", str(wan_registry), "--size", "32x32", "--frames", "9", "--ulysses", "2",
                    "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 frames of 32x32 on 2 ranks, ulysses 2 x ring 1" in done.stdout
    frames, _ = read_video(out)
    assert len(frames) == 9


@pytest.mark.slow
def test_torchrun_refuses_a_size_whose_tokens_do_not_split(wan_registry, tmp_path):
    done = torchrun("--models-file", str(wan_registry), "--size", "16x16", "--frames", "9", "--ulysses", "2",
                    "-o", str(tmp_path / "x.mp4"))
    assert done.returncode != 0  # torchrun exits 1 when its ranks exit 2, the runner's code for bad settings
    assert "reelgen.parallel.run: error: 9 frames of 16x16 make 3 tokens, which do not split evenly over 2 ranks" \
        in done.stderr
    assert "exitcode  : 2" in done.stderr  # the ranks stopped on the message, not on an exception
