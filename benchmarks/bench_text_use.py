"""How much a model uses its caption where an object's colour and path are decided: at high noise.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_text_use.py [--model-dir checkpoints/builtin/ema]

Noises 8 training clips to fixed timesteps, and prints the error of the model's clean-clip
estimate on object pixels (those that differ from the clip's background) with the caption
and with the empty prompt. A model that reads its caption has the smaller error with it,
most of all at high noise, where the pixels say little. The README quotes these figures.
"""

from __future__ import annotations

import torch
from common import begin, model_parser  # benchmarks/common.py

from reelgen.data.dataset import ShapesWorld
from reelgen.diffusion.pixels import frames_to_model
from reelgen.diffusion.schedule import training_scheduler
from reelgen.models.text_encoder import TextEncoder
from reelgen.models.transformer import VideoTransformer

TIMESTEPS = (100, 300, 500, 700, 850, 950)
CLIPS = 8


def main() -> None:
    args = model_parser(__doc__).parse_args()
    begin(args)
    model = VideoTransformer.from_pretrained(args.model_dir).eval()
    encoder, scheduler = TextEncoder(), training_scheduler()
    world = ShapesWorld("train", seed=0, frames=model.cfg.frames, resolution=model.cfg.resolution)
    frames, captions = world.batch(range(CLIPS))
    x0 = frames_to_model(frames, model.cfg.color_space)  # (B, C, F, H, W)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    # object pixels: those that differ from the clip's top-left (background) pixel
    objects = ((x0 - x0[:, :, :, :1, :1]).abs().sum(1, keepdim=True) > 0.2).float()  # (B, 1, F, H, W)
    prompts = {"caption": encoder(captions), "empty prompt": encoder([""] * CLIPS)}
    print(f"error of the clean-clip estimate on object pixels, {CLIPS} training clips")
    print(f"{'t':>5} {'caption':>9} {'empty prompt':>13}")
    for t in TIMESTEPS:
        ts = torch.full((CLIPS,), t)
        xt = scheduler.add_noise(x0, noise, ts)
        ab = scheduler.alphas_cumprod[t]
        errors = []
        with torch.no_grad():
            for text in prompts.values():
                v = model(xt, ts.float(), text.tokens, text.mask, text.pooled)
                x0_hat = ab.sqrt() * xt - (1 - ab).sqrt() * v
                errors.append((((x0_hat - x0) ** 2) * objects).sum() / (objects.sum() * x0.shape[1]))
        print(f"{t:>5} {errors[0]:>9.3f} {errors[1]:>13.3f}")


if __name__ == "__main__":
    main()
