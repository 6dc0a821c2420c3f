"""Seams of long videos: flicker and warping error across window edges vs within windows.

    .venv/bin/python benchmarks/bench_long_video.py [--model-dir runs/builtin/ema] [--prompts 4] [--frames 48]

Each prompt is generated at --frames (3 native lengths by default) twice with
pipelines.long_video: with windows overlapping by half and blended at every
step, and with windows that do not overlap (0 overlap: each window is denoised
alone and the clips are cut together, the naive way). For every pair of
consecutive frames, flicker and warping error (evaluation.metrics) are
measured; pairs that straddle a window edge are "across seams", the others
"within windows". A seamless video scores the same on both.
"""

from __future__ import annotations

import statistics
import sys

import numpy as np

from reelgen.data.dataset import ShapesWorld
from reelgen.evaluation.metrics import flicker, warping_error
from reelgen.models.text_encoder import TextEncoder
from reelgen.models.transformer import VideoTransformer
from reelgen.pipelines.long_video import LongVideoPipeline, temporal_windows, window_edges
from reelgen.pipelines.request import GenerationRequest

from common import begin, model_parser  # benchmarks/common.py


def pair_scores(frames: np.ndarray, edges: list[int]) -> dict[str, dict[str, list[float]]]:
    """{'seam' | 'within': {'flicker' | 'warping_error': [one score per consecutive pair]}}."""
    scores = {side: {"flicker": [], "warping_error": []} for side in ("seam", "within")}
    for i in range(1, len(frames)):
        side = scores["seam" if i in edges else "within"]
        side["flicker"].append(flicker(frames[i - 1:i + 1]))
        side["warping_error"].append(warping_error(frames[i - 1:i + 1]))
    return scores


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--prompts", type=int, default=4, help="prompts from the evaluation split (default: 4)")
    parser.add_argument("--frames", type=int, default=48, help="frames per video (default: 48)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    args = parser.parse_args()
    begin(args)

    model, encoder = VideoTransformer.from_pretrained(args.model_dir), TextEncoder()
    native = model.cfg.frames
    if args.frames % native:  # otherwise the last "cut" window moves back and overlaps after all
        sys.exit(f"--frames must be a multiple of the native length {native}")
    world = ShapesWorld("eval")
    prompts = [world[i].caption for i in range(args.prompts)]
    print(f"{args.prompts} prompts, {args.frames} frames each (native {native}), {args.steps} steps, seed = index")
    # The world's own clips say what a good model scores within a clip; seams mean little far from it.
    data = [pair_scores(world[i].frames, [])["within"] for i in range(args.prompts)]
    means = {metric: statistics.mean(v for d in data for v in d[metric]) for metric in ("flicker", "warping_error")}
    print("reference, the world's clips of these prompts: " + "; ".join(f"{k} {v:.2f}" for k, v in means.items()))
    for overlap, name in ((native // 2, "blended"), (0, "cut")):
        pipeline = LongVideoPipeline(model, encoder, overlap=overlap)
        edges = window_edges(temporal_windows(args.frames, native, overlap))
        totals = {side: {"flicker": [], "warping_error": []} for side in ("seam", "within")}
        for seed, prompt in enumerate(prompts):
            frames = pipeline([GenerationRequest(prompt=prompt, seed=seed, frames=args.frames, steps=args.steps)])[0]
            for side, metrics in pair_scores(frames, edges).items():
                for metric, values in metrics.items():
                    totals[side][metric] += values
        line = []
        for metric in ("flicker", "warping_error"):
            seam, within = (statistics.mean(totals[side][metric]) for side in ("seam", "within"))
            line.append(f"{metric} {seam:.2f} across seams vs {within:.2f} within windows ({seam / within:.2f}x)")
        print(f"{name} (overlap {overlap}, window edges at frames {edges}): " + "; ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
