"""Time the built-in model on this machine: loading, then default text-to-video generation at batch 1.

    .venv/bin/python benchmarks/bench_generate.py [--model-dir runs/builtin/ema] [--runs 5]

Settings are GenerationRequest's defaults (what `reelgen generate` uses). Each
timed clip has a prompt not seen before, so text encoding is counted; model
loading is timed on its own line.
"""

from __future__ import annotations

import statistics
import sys
import time

from reelgen.data.dataset import ShapesWorld
from reelgen.evaluation.machine import peak_rss_mib
from reelgen.evaluation.runner import FPS
from reelgen.pipelines.request import GenerationRequest
from reelgen.pipelines.text_to_video import TextToVideoPipeline

from common import begin, model_parser  # benchmarks/common.py


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed clips after one warm-up (default: 5)")
    args = parser.parse_args()
    begin(args)

    start = time.perf_counter()
    pipeline = TextToVideoPipeline.from_pretrained(args.model_dir)
    print(f"model load: {time.perf_counter() - start:.2f} s (transformer and text encoder, from {args.model_dir})")

    world = ShapesWorld("eval")  # distinct, unseen prompts: the text encoder's cache never hits
    warm_up, *prompts = [world[i].caption for i in range(args.runs + 1)]
    defaults = GenerationRequest(prompt=warm_up)
    print(f"settings: {defaults.frames} frames at {pipeline.resolution}x{pipeline.resolution}, {defaults.steps} "
          f"steps of {defaults.sampler}, guidance {defaults.guidance_scale}, batch 1")
    pipeline([defaults])
    seconds = []
    for i, prompt in enumerate(prompts):
        start = time.perf_counter()
        pipeline([GenerationRequest(prompt=prompt, seed=i)])
        seconds.append(time.perf_counter() - start)

    mean, clip = statistics.mean(seconds), defaults.frames / FPS
    print(f"generation: {mean:.2f} s per clip (min {min(seconds):.2f}, max {max(seconds):.2f}; "
          f"{len(seconds)} runs after 1 warm-up, text encoding included)")
    print(f"real-time factor: {clip / mean:.2f} ({clip:g} s clip at {FPS} fps / generation time)")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
