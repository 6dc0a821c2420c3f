"""Time the built-in model on this machine: loading, then default text-to-video generation at batch 1.

    .venv/bin/python benchmarks/bench_generate.py [--model-dir runs/builtin/ema] [--runs 5]

Settings are GenerationRequest's defaults (what `reelgen generate` uses). Each
timed clip has a prompt not seen before, so text encoding is counted; model
loading is timed on its own line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from reelgen.data.dataset import ShapesWorld
from reelgen.evaluation.machine import machine_info, peak_rss_mib
from reelgen.evaluation.runner import FPS
from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR, GenerationRequest, TextToVideoPipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: built-in)")
    parser.add_argument("--runs", type=int, default=5, help="timed clips after one warm-up (default: 5)")
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        sys.exit(f"no model in {args.model_dir}; pass --model-dir, e.g. runs/builtin/ema from `reelgen train`")

    m = machine_info()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}")

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
