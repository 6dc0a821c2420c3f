"""Training step speed and peak memory per option: precision (fp32 / bf16 / fp16) and gradient checkpointing.

    .venv/bin/python benchmarks/bench_training.py [--preset small] [--batch-size 8] [--steps 3]

Each configuration runs in its own process, so peak RSS belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

CONFIGS = {
    "fp32": {"precision": "fp32", "checkpointing": False},
    "fp32 + checkpointing": {"precision": "fp32", "checkpointing": True},
    "bf16 autocast": {"precision": "bf16", "checkpointing": False},
    "bf16 + checkpointing": {"precision": "bf16", "checkpointing": True},
    "fp16 autocast": {"precision": "fp16", "checkpointing": False},
}


def measure(preset: str, batch_size: int, steps: int, precision: str, checkpointing: bool) -> dict:
    import torch

    from reelgen.data.dataset import ShapesWorld
    from reelgen.diffusion.objective import diffusion_loss
    from reelgen.diffusion.pixels import frames_to_model
    from reelgen.diffusion.schedule import training_scheduler
    from reelgen.models.text_encoder import TextEncoder
    from reelgen.models.transformer import PRESETS, VideoTransformer
    from reelgen.training.loop import _autocast

    torch.manual_seed(0)
    cfg = PRESETS[preset]
    model = VideoTransformer(cfg).train()
    model.gradient_checkpointing = checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames, captions = ShapesWorld("train", frames=cfg.frames, resolution=cfg.resolution).batch(range(batch_size))
    x0, text = frames_to_model(frames), TextEncoder()(captions)
    sched = training_scheduler()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        with _autocast(precision, torch.device("cpu")):
            loss = diffusion_loss(model, x0, text, sched, temporal_weight=0.25,
                                  generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = sorted(times)[len(times) // 2]
    return {"step_s": step, "clips_per_s": batch_size / step, "peak_rss_mb": peak / 1024,
            "training_rss_mb": (peak - base_rss) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.preset, args.batch_size, args.steps, **CONFIGS[args.one])))
        return

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"preset {args.preset}, batch {args.batch_size}, median of {args.steps} steps after one warm-up step")
    print(f"{'configuration':<24} {'s/step':>8} {'clips/s':>8} {'peak RSS MB':>12}")
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--preset", args.preset, "--batch-size",
                              str(args.batch_size), "--steps", str(args.steps)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<24} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<24} {r['step_s']:>8.2f} {r['clips_per_s']:>8.2f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
