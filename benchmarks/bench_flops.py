"""FLOPs of one denoising step of the built-in model, and how much of this CPU's matmul throughput it gets.

    .venv/bin/python benchmarks/bench_flops.py [--model-dir runs/builtin/ema]

A step is one classifier-free-guided forward: the conditional and unconditional
passes of one clip run as a batch of 2, as the pipeline runs them.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from reelgen.diffusion.guidance import guided_prediction
from reelgen.pipelines.request import GenerationRequest
from reelgen.pipelines.text_to_video import TextToVideoPipeline

from common import begin, model_parser  # benchmarks/common.py

# On the CPU, scaled_dot_product_attention runs this fused kernel, which
# FlopCounterMode has no formula for: without one, attention would count 0.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
}


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default: 10)")
    args = parser.parse_args()
    begin(args)

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak = 2 * n**3 / seconds_per_call(lambda: torch.mm(a, b), args.repeats) / 1e9
    print(f"float32 matmul {n}x{n}: {peak:.1f} GFLOP/s")

    pipeline = TextToVideoPipeline.from_pretrained(args.model_dir)
    cfg, req = pipeline.model.cfg, GenerationRequest(prompt="a red circle moving to the right on a black background")
    cond, uncond = pipeline.text_encoder([req.prompt]), pipeline.text_encoder([req.negative_prompt])
    x = torch.randn(1, cfg.channels, req.frames, cfg.resolution, cfg.resolution)  # (B, C, F, H, W)
    t = torch.full((1,), 500.0)

    @torch.no_grad()
    def step():
        return guided_prediction(pipeline.model, x, t, cond, uncond, req.guidance_scale)

    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = seconds_per_call(step, args.repeats)
    params = sum(p.numel() for p in pipeline.model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters, {req.frames} frames at {cfg.resolution}x{cfg.resolution}, "
          f"guidance {req.guidance_scale} (batch 2 per step)")
    print(f"FLOPs per denoising step: {flops / 1e9:.2f} GFLOP")
    print(f"time per denoising step: {seconds * 1e3:.1f} ms")
    print(f"achieved: {flops / seconds / 1e9:.1f} GFLOP/s, {flops / seconds / 1e9 / peak:.0%} of matmul throughput")
    print(f"{req.steps} steps: {flops * req.steps / 1e9:.1f} GFLOP per clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
