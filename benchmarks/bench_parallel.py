"""Speedup S(N) of one video over N processes, per parallel mode, with the bytes it costs.

    .venv/bin/python benchmarks/bench_parallel.py [--repeats 10] [--frames 16] [--preset small]

Modes, each timed as the model work of one denoising step with guidance on:
  cfg       the two passes of guidance on two ranks (parallel.CFGParallel)
  sequence  each rank runs the blocks on half the frames (parallel.shard_model)
  windows   a long video's windows shared out (LongVideoPipeline(group=...)), 2.5 native lengths
  context   a diffusers Wan transformer (random, WIDE_WAN below) under diffusers' own Ulysses context
            parallelism (parallel.diffusers_cp), --context-frames latent frames of 16x16 latents, the two
            forwards of a guided step

Every figure comes from fresh processes (parallel.launch.run_ranks): N = 1
with 1 thread, and with 2 threads both with OpenMP's default spinning waits
and with OMP_WAIT_POLICY=PASSIVE; N = 2 as two gloo processes of 1 thread each.
S(2) is against the 1-thread baseline (each rank has one thread), and alpha is
fitted from it: S(N) = N / (1 + alpha (N - 1)), so alpha = 2 / S(2) - 1. S
against the better 2-thread run answers the practical question on this
machine: is a second process better than a second thread? Random weights:
timing does not depend on them.

Bytes are what one rank sends per step (ring algorithms), counted by
parallel.comm.Traffic. The projection to an 8-GPU node is a model, not a
measurement: FLOPs counted on the meta device, bytes from the formula the
counts confirm (sequence.bytes_per_forward), and the published figures stated
in its lines; step time = compute / N + bytes / bandwidth + latency x collectives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch
import torch.distributed as td
from torch.utils.flop_counter import FlopCounterMode

from reelgen.diffusion.guidance import guided_prediction
from reelgen.evaluation.machine import machine_info
from reelgen.models.text_encoder import TextEmbedding
from reelgen.models.transformer import PRESETS, VideoTransformer, VideoTransformerConfig
from reelgen.parallel import CFGParallel, Traffic, shard_model
from reelgen.parallel.comm import all_gather, all_reduce_sum, all_to_all, split_sizes
from reelgen.parallel.launch import run_ranks
from reelgen.parallel.sequence import bytes_per_forward
from reelgen.pipelines.long_video import LongVideoPipeline
from reelgen.pipelines.request import GenerationRequest
from reelgen.scaling.plan import fit_alpha, speedup

MODES = ("cfg", "sequence", "windows", "context")
GUIDANCE = 5.0
STEPS = GenerationRequest.steps  # denoising steps of a default video
# Published figures for the projection: H100 SXM dense BF16 and NVLink 4 per direction per GPU.
GPU_FLOPS, GPU_EFFICIENCY = 989e12, 0.4  # a 40 % model-FLOPs utilization is typical of inference at this size
LINK_BYTES_PER_S, COLLECTIVE_LATENCY_S = 450e9, 15e-6  # NCCL's intra-node small-message latency is 10-20 us
GPU_HOUR_USD = 2.5  # on-demand H100, per GPU-hour, order of magnitude


def build(preset: str) -> VideoTransformer:
    torch.manual_seed(0)
    model = VideoTransformer(PRESETS[preset])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def inputs(model: VideoTransformer, frames: int):
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.channels, frames, cfg.resolution, cfg.resolution, generator=g)  # (B, C, F, H, W)
    text = [TextEmbedding(torch.randn(1, 32, cfg.text_dim, generator=g), torch.ones(1, 32, dtype=torch.bool),
                          torch.randn(1, cfg.text_dim, generator=g)) for _ in range(2)]
    return x, torch.full((1,), 500.0), *text


# A tiny Wan wider than the test one, so a step has work to split: 4 heads of 32, 4 blocks, patch (1, 2, 2).
WIDE_WAN = dict(heads=4, head_dim=32, ffn_dim=256, layers=4)
WAN_LATENT = 16  # latent height and width: 8x8 patches per latent frame


def wan_inputs(transformer, latent_frames: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, transformer.config.in_channels, latent_frames, WAN_LATENT, WAN_LATENT, generator=g)
    text = [torch.randn(1, 16, transformer.config.text_dim, generator=g) for _ in range(2)]  # (B, L, text_dim)
    return x, torch.full((1,), 500.0), text


def context_step(frames: int, traffic: Traffic):
    """The two transformer forwards of a guided Wan step, context-parallel over the job's ranks if several."""
    from reelgen.backends.tiny import tiny_wan
    from reelgen.parallel.diffusers_cp import Layout, count_traffic, enable_context_parallel

    pipe = tiny_wan(**WIDE_WAN)
    if td.is_initialized() and td.get_world_size() > 1:
        enable_context_parallel(pipe, Layout(ulysses=td.get_world_size()))
    model = pipe.transformer.eval()
    x, t, text = wan_inputs(model, frames)

    def step():
        with count_traffic(traffic):
            return [model(x, t, emb, return_dict=False)[0] for emb in text]
    return step


def step_function(mode: str, preset: str, frames: int, traffic: Traffic):
    """One denoising step's model work in `mode`, on all ranks of the default group (or alone)."""
    if mode == "context":
        return context_step(frames, traffic)
    model = build(preset)
    parallel = td.is_initialized() and td.get_world_size() > 1
    if mode == "windows":
        frames = frames * 5 // 2  # 4 windows with the default half overlap: 2 per rank
        pipeline = LongVideoPipeline(model, None, group=td.group.WORLD if parallel else None, traffic=traffic)
        x, t, cond, uncond = inputs(model, frames)
        return lambda: pipeline.predict(x, t, cond, uncond, GUIDANCE)
    if mode == "sequence" and parallel:
        shard_model(model, traffic=traffic)
    guidance = CFGParallel(traffic=traffic) if mode == "cfg" and parallel else guided_prediction
    x, t, cond, uncond = inputs(model, frames)
    return lambda: guidance(model, x, t, cond, uncond, GUIDANCE)


def collectives_per_step(mode: str, preset: str, frames: int, repeats: int) -> float:
    """Fastest time of one step's collectives alone, on tensors of the shapes `mode` sends."""
    cfg = PRESETS[preset]
    world, rank = td.get_world_size(), td.get_rank()
    if mode == "context":
        return context_collectives(frames, repeats)
    pixels = (1, cfg.channels, frames, cfg.resolution, cfg.resolution)  # (B, C, F, H, W)
    positions = 2 * (cfg.resolution // cfg.patch_size) ** 2  # B*N with guidance's batch of 2
    frame_sizes = split_sizes(frames, world)
    x = torch.randn(positions, frame_sizes[rank], cfg.dim)  # (B*N, F/P, D)
    h = torch.randn(2, frame_sizes[rank], positions // 2, cfg.dim)  # (B, F/P, N, D)

    def sequence():
        for _ in range(cfg.depth):
            all_to_all(all_to_all(x, 0, 1, frame_sizes), 1, 0, split_sizes(positions, world))
        all_gather(h, 1, frame_sizes)

    step = {"cfg": lambda: all_gather(torch.randn(pixels), 0, [1] * world),
            "sequence": sequence,
            "windows": lambda: all_reduce_sum(torch.randn(*pixels[:2], frames * 5 // 2, *pixels[3:]))}[mode]
    times = []
    for _ in range(repeats):
        td.barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def context_collectives(latent_frames: int, repeats: int) -> float:
    """Fastest time of a context step's collectives alone: per forward and block, 4 all-to-alls of a rank's
    (tokens/P, heads, head_dim) slice, then proj_out's all-gather; two forwards."""
    world = td.get_world_size()
    tokens = latent_frames * (WAN_LATENT // 2) ** 2
    qkv = torch.randn(tokens // world * WIDE_WAN["heads"] * WIDE_WAN["head_dim"])
    out = torch.randn(tokens // world * 16 * 4)  # out_channels x patch (1, 2, 2)

    def step():
        for _ in range(2):
            for _ in range(4 * WIDE_WAN["layers"]):
                td.all_to_all_single(torch.empty_like(qkv), qkv)
            td.all_gather([torch.empty_like(out) for _ in range(world)], out)

    times = []
    for _ in range(repeats):
        td.barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def seconds_per_step(mode: str, preset: str, frames: int, repeats: int) -> tuple[float, float, float]:
    """Fastest and median seconds per step, and bytes this rank sent per step."""
    traffic = Traffic()
    step = step_function(mode, preset, frames, traffic)
    for _ in range(2):  # warm-up: first calls allocate and pick kernels
        step()
    traffic.bytes_sent = 0
    times = []
    for _ in range(repeats):
        if td.is_initialized() and td.get_world_size() > 1:
            td.barrier()  # start together, so one rank's lateness is not billed to the step
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), traffic.bytes_sent / repeats


# Projected as well: a VideoTransformer with Wan2.1-1.3B's width and depth (about 2 B parameters
# here, with a wider MLP and adaLN), on 32 frames of 32x32 tokens (256 px, patch 8).
LARGE = VideoTransformerConfig(dim=1536, depth=30, heads=12, resolution=256, patch_size=8, frames=32)
LAYOUTS = ((2, 1), (1, 2), (1, 4), (1, 8), (2, 4))  # (cfg, sequence) ranks


@torch.no_grad()
def flops_per_step(cfg: VideoTransformerConfig, frames: int) -> float:
    """FLOPs of one guided step, counted on the meta device: no memory, no compute."""
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model = VideoTransformer(cfg)
        x = torch.zeros(1, cfg.channels, frames, cfg.resolution, cfg.resolution)
        text = TextEmbedding(torch.zeros(1, 32, cfg.text_dim), torch.ones(1, 32, dtype=torch.bool),
                             torch.zeros(1, cfg.text_dim))
        guided_prediction(model, x, torch.full((1,), 500.0), text, text, GUIDANCE)
    return counter.get_total_flops()


def projected_step(cfg: VideoTransformerConfig, frames: int, flops: float, n_cfg: int,
                   n_seq: int) -> tuple[float, float]:
    """(seconds per step, fp32 bytes sent per rank) on an NVLink node, cfg x sequence ranks; bf16 on the wire."""
    sent = bytes_per_forward(cfg, batch=2 // n_cfg, frames=frames, world=n_seq)
    collectives = 2 * cfg.depth + 1 if n_seq > 1 else 0
    if n_cfg == 2:
        sent += cfg.channels * frames * cfg.resolution**2 * 4  # the prediction, gathered once
        collectives += 1
    compute = flops / (GPU_FLOPS * GPU_EFFICIENCY) / (n_cfg * n_seq)
    return compute + sent / 2 / LINK_BYTES_PER_S + collectives * COLLECTIVE_LATENCY_S, sent


def print_projection(name: str, cfg: VideoTransformerConfig, frames: int, steps: int) -> None:
    flops = flops_per_step(cfg, frames)
    one, _ = projected_step(cfg, frames, flops, 1, 1)
    print(f"projection, {name} ({frames} frames, {flops / 1e9:,.1f} GFLOP per step): N=1 {one * 1e3:.2f} ms/step, "
          f"${GPU_HOUR_USD * one * steps / 3600:.5f} per {steps}-step video")
    for n_cfg, n_seq in LAYOUTS:
        n = n_cfg * n_seq
        seconds, sent = projected_step(cfg, frames, flops, n_cfg, n_seq)
        s = one / seconds
        print(f"projection, {name}, cfg {n_cfg} x sequence {n_seq}: S({n}) = {s:.2f}, alpha = {fit_alpha(n, s):.3f}, "
              f"{sent / 1e6:.2f} MB fp32 per rank per step, {seconds * steps:.2f} s and "
              f"${GPU_HOUR_USD * n * seconds * steps / 3600:.5f} per video")


@contextlib.contextmanager
def passive_openmp():
    """Spawned processes inherit OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning.

    With another job on the cores, a spinning thread burns the time slice its
    busy sibling needs: here 2 spinning threads run a step several times slower than 1.
    """
    before = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_WAIT_POLICY"]
        else:
            os.environ["OMP_WAIT_POLICY"] = before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model size (default: small)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per measurement (default: 10)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--context-frames", type=int, default=8,
                        help="latent frames of the context mode's Wan (default: 8, 512 tokens)")
    args = parser.parse_args()
    modes = args.modes.split(",")

    m = machine_info()
    load = os.getloadavg()[0]
    cfg = PRESETS[args.preset]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average {load:.1f} at start "
          "(other jobs share these cores: expect noise)")
    print(f"model: preset {args.preset!r} (dim {cfg.dim}, depth {cfg.depth}), random weights, {args.frames} frames at "
          f"{cfg.resolution}x{cfg.resolution}, guidance on, {args.repeats} steps after 2 warm-ups "
          "(the fastest step is the one least disturbed by other jobs)")
    for mode in modes:
        frames = args.context_frames if mode == "context" else args.frames
        if mode == "context":
            print(f"context: diffusers WanTransformer3DModel {WIDE_WAN}, {frames} latent frames of "
                  f"{WAN_LATENT}x{WAN_LATENT} ({frames * (WAN_LATENT // 2) ** 2} tokens), Ulysses over the ranks")
        work = (seconds_per_step, mode, args.preset, frames, args.repeats)
        one = run_ranks(work[0], 1, *work[1:], threads=1)[0]
        spinning = run_ranks(work[0], 1, *work[1:], threads=2)[0]
        with passive_openmp():
            passive = run_ranks(work[0], 1, *work[1:], threads=2)[0]
        *two, sent = run_ranks(work[0], 2, *work[1:], threads=1)[0]
        for i, stat in enumerate(("fastest", "median")):
            s, s_vs_2 = one[i] / two[i], min(spinning[i], passive[i]) / two[i]
            alpha = fit_alpha(2, s)
            print(f"{mode} ({stat} step): N=1 {one[i] * 1e3:.0f} ms with 1 thread, {spinning[i] * 1e3:.0f} ms with 2 "
                  f"({passive[i] * 1e3:.0f} ms with OMP_WAIT_POLICY=PASSIVE); N=2 {two[i] * 1e3:.0f} ms; "
                  f"S(2) = {s:.2f} vs 1 thread, {s_vs_2:.2f} vs the better 2-thread run; "
                  f"alpha = {alpha:.2f}, S(8) if it held = {speedup(8, alpha):.1f}")
        comm = run_ranks(collectives_per_step, 2, mode, args.preset, frames, args.repeats)[0]
        free = one[0] / (one[0] / 2 + comm)
        print(f"{mode}: {sent / 1e6:.2f} MB sent per rank per step; its collectives alone take {comm * 1e3:.1f} ms "
              f"on gloo; with two free cores S(2) would be about {free:.2f} (1-thread step / 2 + collectives), "
              f"alpha {fit_alpha(2, free):.2f}")

    print(f"projection assumptions: H100 SXM, {GPU_FLOPS / 1e12:.0f} TFLOP/s dense bf16 at {GPU_EFFICIENCY:.0%}, "
          f"NVLink {LINK_BYTES_PER_S / 1e9:.0f} GB/s per direction, {COLLECTIVE_LATENCY_S * 1e6:.0f} us per "
          f"collective, ${GPU_HOUR_USD}/GPU-hour; bytes as counted here, halved for bf16")
    print_projection(f"preset {args.preset!r}", cfg, args.frames, STEPS)
    print_projection("2 B-parameter", LARGE, LARGE.frames, STEPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
