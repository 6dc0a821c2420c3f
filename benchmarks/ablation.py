"""Measure what the temporal-consistency loss, the Lab colour space and the timestep shift do, with equal budgets.

    .venv/bin/python benchmarks/ablation.py --steps 1500 --batch-size 16 --n-per-split 32

Trains one model per variant from the same seed (resuming any run already under
runs/ablation/), evaluates each with `reelgen eval`'s runner, and prints a table:
colour accuracy is what Lab should move; flicker, warping error and direction
accuracy are what the temporal term should move; the timestep shift (noisier timesteps
more often) should move colour and direction, which are decided at high noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VARIANTS = {
    "rgb": {"color_space": "rgb", "temporal_weight": 0.0},
    "rgb + temporal 0.25": {"color_space": "rgb", "temporal_weight": 0.25},
    "lab": {"color_space": "lab", "temporal_weight": 0.0},
    "rgb + shift 3": {"color_space": "rgb", "temporal_weight": 0.0, "timestep_shift": 3.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--n-per-split", type=int, default=32, help="evaluation clips per split")
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()

    from reelgen.evaluation.runner import run_eval
    from reelgen.pipelines.text_to_video import TextToVideoPipeline
    from reelgen.training.loop import TrainConfig, train

    rows = {}
    for name, options in VARIANTS.items():
        run = Path(args.out) / name.replace(" ", "_").replace("+", "plus")
        ema = train(TrainConfig(out_dir=str(run), preset=args.preset, steps=args.steps, batch_size=args.batch_size,
                                **options), progress=False)
        results = run_eval(TextToVideoPipeline.from_pretrained(ema), out_dir=run / "eval",
                           n_per_split=args.n_per_split)
        rows[name] = results["model"]
        print(f"{name}: {json.dumps(results['model'])}", flush=True)

    print(f"\n{args.steps} steps x {args.batch_size} clips per variant, {args.n_per_split} prompts per split")
    print(f"{'variant':<22} {'split':<8} {'colour':>7} {'shape':>6} {'direction':>9} {'flicker':>8} {'warping':>8}")
    for name, splits in rows.items():
        for split, r in splits.items():
            print(f"{name:<22} {split:<8} {r['color']:>7.2f} {r['shape']:>6.2f} {r['direction']:>9.2f} "
                  f"{r['flicker']:>8.2f} {r['warping_error']:>8.2f}")


if __name__ == "__main__":
    main()
