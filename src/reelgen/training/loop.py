"""Training the built-in model on the procedural world.

Resumable: data and noise at step s are pure functions of (seed, s, rank), so a
run resumed from a checkpoint sees exactly what an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reelgen.data.dataset import ShapesWorld
from reelgen.diffusion.objective import diffusion_loss
from reelgen.diffusion.pixels import frames_to_model
from reelgen.diffusion.schedule import training_scheduler
from reelgen.models.text_encoder import TextEncoder
from reelgen.models.transformer import PRESETS, VideoTransformer, inflate_patches
from reelgen.training import distributed
from reelgen.training.checkpoint import load_checkpoint, save_checkpoint
from reelgen.training.ema import EMA

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    out_dir: str = "runs/builtin"  # checkpoints, EMA weights and the loss log go here
    preset: str = "small"  # model size, a key of reelgen.models.transformer.PRESETS
    steps: int = 20_000  # optimizer steps to reach (a resumed run continues up to this)
    batch_size: int = 16  # clips per step per process
    lr: float = 3e-4  # AdamW learning rate after warm-up
    warmup_steps: int = 200  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.999  # decay of the shipped EMA weights
    cond_dropout: float = 0.1  # probability of training a caption as "" (enables classifier-free guidance)
    temporal_weight: float = 0.0  # weight of the temporal-consistency loss term
    timestep_shift: float = 1.0  # > 1 trains noisier timesteps more often (1: uniform)
    color_space: str = "rgb"  # "rgb" or "lab": the space the model learns pixels in
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" autocast (bf16 is ~300x slower on CPUs without AVX512-BF16)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time
    seed: int = 0  # seeds data, noise, dropout and initialization
    init_from: str | None = None  # a model folder whose weights start a new run (inflated to the preset's tubelets)
    checkpoint_every: int = 100  # steps between checkpoints
    max_minutes: float | None = None  # stop (after checkpointing) when this much wall time has passed

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.color_space not in ("rgb", "lab"):
            raise ValueError("color_space must be 'rgb' or 'lab'")
        if self.timestep_shift <= 0:
            raise ValueError("timestep_shift must be positive")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be positive")


def _autocast(precision: str, device: torch.device):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _drop_log_rows_after(path: Path, step: int) -> None:
    """A run killed between checkpoints logged steps it will now train again: keep one row per step."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)


def _load_init_weights(model: VideoTransformer, directory: str, seed: int) -> None:
    """Start from a trained model's weights: same architecture, or fewer frames per patch (inflated)."""
    source = VideoTransformer.from_pretrained(directory)
    if replace(source.cfg, patch_frames=model.cfg.patch_frames) != model.cfg:
        raise ValueError(f"{directory} holds a model of another architecture ({source.cfg}); --init-from needs the "
                         f"preset's ({model.cfg}) up to frames per patch")
    model.load_state_dict(inflate_patches(source.state_dict(), model.cfg, seed))


def train(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Train (or resume) and return the folder holding the EMA weights."""
    dist = distributed.setup()
    device = dist.device
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"

    torch.manual_seed(cfg.seed)
    model_cfg = replace(PRESETS[cfg.preset], color_space=cfg.color_space)
    model = VideoTransformer(model_cfg).to(device)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    if cfg.init_from and not ckpt_path.exists():  # a resumed run has its own weights
        _load_init_weights(model, cfg.init_from, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(model, decay=cfg.ema_decay)
    step = 0
    if ckpt_path.exists():
        saved_cfg, step = load_checkpoint(ckpt_path, model, optimizer, ema)
        if saved_cfg["preset"] != cfg.preset or saved_cfg["color_space"] != cfg.color_space:
            raise ValueError(f"{ckpt_path} was trained with preset={saved_cfg['preset']} "
                             f"color_space={saved_cfg['color_space']}; use another --out-dir")
    ema.model.to(device)
    wrapped = dist.wrap(model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    world = ShapesWorld("train", seed=cfg.seed, frames=model_cfg.frames, resolution=model_cfg.resolution)
    text_encoder = TextEncoder()
    scheduler = training_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)

    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _drop_log_rows_after(out / "log.jsonl", step)
    log = (out / "log.jsonl").open("a") if dist.is_main else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and dist.is_main), unit="step",
               dynamic_ncols=True)
    started = time.monotonic()
    window_t, window_n = time.monotonic(), 0
    model.train()

    def batch(step: int):
        """Step `step`'s clips (B, 3, F, H, W), text and noise seed: disjoint per rank, fixed per step."""
        first = (step * dist.world_size + dist.rank) * cfg.batch_size
        frames, captions = world.batch(range(first, first + cfg.batch_size))
        rng = np.random.default_rng([cfg.seed, step, dist.rank])
        captions = ["" if rng.random() < cfg.cond_dropout else c for c in captions]
        return frames_to_model(frames, cfg.color_space), text_encoder(captions), int(rng.integers(2**62))

    # Rendering clips and encoding captions took ~0.5 s of a ~2 s step on 2 cores; a thread
    # prepares the next step's batch while this one trains. Batches are pure functions of the step.
    prefetch = ThreadPoolExecutor(max_workers=1)
    pending = prefetch.submit(batch, step)
    while step < cfg.steps:
        # 1. this step's batch, and the next one started
        x0, text, noise_seed = pending.result()
        x0, text = x0.to(device), text.to(device)
        if step + 1 < cfg.steps:
            pending = prefetch.submit(batch, step + 1)

        # 2. loss and update
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        noise_gen = torch.Generator().manual_seed(noise_seed)
        with _autocast(cfg.precision, device):
            loss = diffusion_loss(wrapped, x0, text, scheduler, temporal_weight=cfg.temporal_weight,
                                  timestep_shift=cfg.timestep_shift, generator=noise_gen)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.total).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)
        step += 1
        window_n += cfg.batch_size * dist.world_size

        # Every rank must agree to stop, or the others would wait forever in the next all-reduce.
        out_of_time = dist.any(cfg.max_minutes is not None and time.monotonic() - started > cfg.max_minutes * 60)

        # 3. report and checkpoint (rank 0 only)
        if not dist.is_main:
            if out_of_time:
                break
            continue
        if not math.isfinite(loss.total.item()):
            raise FloatingPointError(f"loss became {loss.total.item()} at step {step}")
        rate = window_n / max(time.monotonic() - window_t, 1e-9)
        bar.set_postfix(loss=f"{loss.total.item():.4f}", clips_per_s=f"{rate:.1f}")
        bar.update(1)
        log.write(json.dumps({"step": step, "loss": loss.total.item(), "diffusion": loss.diffusion.item(),
                              "temporal": loss.temporal.item(), "grad_norm": grad_norm.item(),
                              "clips_per_s": rate, "time": time.time()}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            log.flush()
            save_checkpoint(ckpt_path, asdict(cfg), step, model, optimizer, ema)
            ema.model.save_pretrained(out / "ema")
            window_t, window_n = time.monotonic(), 0
        if out_of_time:
            break
    prefetch.shutdown(cancel_futures=True)
    bar.close()
    if log:
        log.close()
    # DDP's reducer holds the process group: free it before the group goes. Freed only as train() returned,
    # after destroy_process_group, its gloo threads were joined there and one rank hung at exit (seen in CI).
    del wrapped
    dist.teardown()
    return out / "ema"
