"""A video diffusion transformer with factorized space-time attention.

DiT (Peebles & Xie, 2023) blocks with adaLN-Zero conditioning, split into
spatial attention within each frame and temporal attention across frames at each
position (Latte / "Space-Time" factorization, Ma et al. 2024), plus
cross-attention to text tokens (PixArt-alpha). Imports only torch and einops.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class VideoTransformerConfig:
    frames: int = 16  # native clip length the model was trained on
    resolution: int = 32  # native height and width in pixels
    channels: int = 3  # image channels (RGB or Lab)
    patch_size: int = 4  # pixels per patch side; tokens per frame = (resolution / patch_size) ** 2
    patch_frames: int = 1  # frames per patch (a tubelet); the clip's frame count must be a multiple
    dim: int = 128  # token width
    depth: int = 6  # number of space-time blocks
    heads: int = 4  # attention heads (head dim = dim / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    text_dim: int = 384  # width of the text encoder's token embeddings
    color_space: str = "rgb"  # "rgb" or "lab": what the model's pixels mean

    def __post_init__(self):
        if self.resolution % self.patch_size:
            raise ValueError("resolution must be a multiple of patch_size")
        if self.patch_frames < 1 or self.frames % self.patch_frames:
            raise ValueError("frames must be a multiple of patch_frames")
        if self.dim % self.heads:
            raise ValueError("dim must be a multiple of heads")
        if self.color_space not in ("rgb", "lab"):
            raise ValueError("color_space must be 'rgb' or 'lab'")


PRESETS: dict[str, VideoTransformerConfig] = {
    # Two blocks of width 32: for tests, runs in milliseconds.
    "test": VideoTransformerConfig(dim=32, depth=2, heads=2, resolution=16, frames=8),
    # The built-in model: ~3 M parameters, faster than real time on a 2-core CPU. Tubelets of 2 frames
    # halve the tokens, so a training step and a denoising step cost half of "small-framewise".
    "small": VideoTransformerConfig(patch_frames=2),
    # The built-in model's first 6k training steps had one frame per patch; `reelgen train --init-from`
    # inflates such weights to tubelets (see inflate_patches).
    "small-framewise": VideoTransformerConfig(),
    # Wider and deeper: better samples, for machines with more cores or a GPU.
    "base": VideoTransformerConfig(dim=256, depth=8, heads=8),
}


def load_config(directory: str | Path) -> VideoTransformerConfig:
    """The config saved beside a model's weights (readable without loading them)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a reelgen model folder: config.json is missing")
    return VideoTransformerConfig(**json.loads(path.read_text()))


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding of (N,) positions -> (N, dim)."""
    half = dim // 2
    # Built on the positions' device: a CPU tensor here would fail the first forward on a GPU.
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)  # (half,)
    freqs = torch.exp(-math.log(10000.0) * steps / half)  # (half,)
    angles = positions.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Diffusion timesteps (B,) in [0, 1000) -> (B, dim)."""
    return sincos_1d(t, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention on PyTorch's fused scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)  # (B, H, N, Dh)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)  # (B, H, M, Dh)
        # mask (B, M) True = attend; broadcast over heads and queries.
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, Dh)
        return self.out(rearrange(y, "b h n d -> b n (h d)"))  # (B, N, D)


class SpaceTimeBlock(nn.Module):
    """Spatial attention, temporal attention, text cross-attention, MLP; adaLN-Zero gated."""

    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        d = cfg.dim
        self.norm_s = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(d, cfg.heads)
        self.norm_t = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(d, cfg.heads)
        self.norm_c = nn.LayerNorm(d, eps=1e-6)
        self.attn_c = Attention(d, cfg.heads, context_dim=d)
        self.norm_m = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        # Shift, scale and gate for the spatial, temporal and MLP branches.
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        b, f, n, d = x.shape  # (B, F, N, D)
        mods = self.ada(cond)[:, None, None, :].chunk(9, dim=-1)  # 9 x (B, 1, 1, D)
        shift_s, scale_s, gate_s, shift_t, scale_t, gate_t, shift_m, scale_m, gate_m = mods

        h = modulate(self.norm_s(x), shift_s, scale_s).reshape(b * f, n, d)  # (B*F, N, D)
        x = x + gate_s * self.attn_s(h).reshape(b, f, n, d)  # (B, F, N, D)

        h = rearrange(modulate(self.norm_t(x), shift_t, scale_t), "b f n d -> (b n) f d")  # (B*N, F, D)
        x = x + gate_t * rearrange(self.attn_t(h), "(b n) f d -> b f n d", b=b)  # (B, F, N, D)

        h = self.norm_c(x).reshape(b, f * n, d)  # (B, F*N, D)
        x = x + self.attn_c(h, text, text_mask).reshape(b, f, n, d)  # (B, F, N, D)

        h = modulate(self.norm_m(x), shift_m, scale_m)  # (B, F, N, D)
        return x + gate_m * self.mlp(h)  # (B, F, N, D)


class VideoTransformer(nn.Module):
    """Predicts the diffusion target for a noisy clip, given timesteps and text."""

    def __init__(self, cfg: VideoTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = False
        d, p, c = cfg.dim, cfg.patch_size, cfg.channels
        values = c * cfg.patch_frames * p * p  # pixels in one patch
        self.patch_in = nn.Linear(values, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.pooled_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.blocks = nn.ModuleList(SpaceTimeBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.patch_out = nn.Linear(d, values)
        # adaLN-Zero: the network starts as the identity of its residual stream and outputs zero.
        for layer in (self.ada_out[1], self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        side = cfg.resolution // p
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        spatial = torch.cat([sincos_1d(ys.flatten(), d // 2), sincos_1d(xs.flatten(), d // 2)], dim=-1)
        self.register_buffer("pos_spatial", spatial, persistent=False)  # (N, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                pooled: torch.Tensor) -> torch.Tensor:
        """x (B, C, F, H, W), t (B,), text (B, L, text_dim), text_mask (B, L) bool, pooled (B, text_dim)."""
        b, c, frames, hgt, wid = x.shape
        p, pt = self.cfg.patch_size, self.cfg.patch_frames
        if hgt != self.cfg.resolution or wid != self.cfg.resolution:
            raise ValueError(f"expected {self.cfg.resolution}x{self.cfg.resolution} frames, got {hgt}x{wid}")
        if frames % pt:
            raise ValueError(f"this model takes a multiple of {pt} frames, got {frames}")
        # F below counts token frames (tubelets): frames / patch_frames.
        tokens = rearrange(x, "b c (f pt) (h p1) (w p2) -> b f (h w) (c pt p1 p2)", pt=pt, p1=p, p2=p)  # (B, F, N, V)
        h = self.patch_in(tokens) + self.pos_spatial  # (B, F, N, D)
        # A tubelet sits at the index of its first frame, so positions mean frames whatever patch_frames is.
        starts = torch.arange(0, frames, pt, device=x.device)  # (F,)
        h = h + sincos_1d(starts, self.cfg.dim).to(h.dtype)[None, :, None, :]  # (B, F, N, D)

        cond = self.time_mlp(timestep_embedding(t, self.cfg.dim).to(h.dtype)) + self.pooled_proj(pooled)  # (B, D)
        ctx = self.text_proj(text)  # (B, L, D)

        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                h = checkpoint(block, h, cond, ctx, text_mask, use_reentrant=False)
            else:
                h = block(h, cond, ctx, text_mask)  # (B, F, N, D)

        shift, scale = self.ada_out(cond)[:, None, None, :].chunk(2, dim=-1)  # 2 x (B, 1, 1, D)
        out = self.patch_out(modulate(self.norm_out(h), shift, scale))  # (B, F, N, V)
        side = self.cfg.resolution // p
        return rearrange(out, "b f (h w) (c pt p1 p2) -> b c (f pt) (h p1) (w p2)",
                         h=side, pt=pt, p1=p, p2=p, c=c)  # (B, C, frames, H, W)

    # --- persistence: safetensors weights beside a JSON config -------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # Write then rename, so a reader (or a crash) never sees half a file.
        save_file(state, str(directory / "model.safetensors.tmp"))
        os.replace(directory / "model.safetensors.tmp", directory / "model.safetensors")
        (directory / "config.json.tmp").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        os.replace(directory / "config.json.tmp", directory / "config.json")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "VideoTransformer":
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg = load_config(directory)
        if not (directory / "model.safetensors").is_file():
            raise FileNotFoundError(f"{directory} is not a reelgen model folder: model.safetensors is missing")
        model = cls(cfg)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model.to(device).eval()


def inflate_patches(state: dict[str, torch.Tensor], cfg: VideoTransformerConfig,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of a model with fewer frames per patch, made to fit `cfg` (as I3D inflates 2D filters).

    The input embedding averages the frames of a tubelet (each frame's weights / k), and
    the output head writes the same prediction to each of its frames; everything else is
    per token and unchanged. A clip whose tubelets hold k equal frames gets the embedding
    the source model gave one of those frames.

    The mean alone would be a saddle: tokens would carry nothing of how a tubelet's frames
    differ, the head's per-frame rows would get no gradient to tell them apart, and so no
    gradient would reach the input's either (seen: after 200 steps both had barely moved
    and the loss sat at 0.18). So each frame's input weights also get a random part, drawn
    as nn.Linear draws its weights and zero-mean over the frames of a tubelet, which keeps
    the equal-frames property above.
    """
    c, p, pt = cfg.channels, cfg.patch_size, cfg.patch_frames
    old = state["patch_in.weight"].shape[1] // (c * p * p)  # source frames per patch
    if pt % old or state["patch_in.weight"].shape[1] != c * old * p * p:
        raise ValueError(f"cannot inflate {old}-frame patches of another size to {pt}-frame patches")
    k = pt // old
    out = dict(state)
    w_in = rearrange(state["patch_in.weight"], "d (c t p1 p2) -> d c t p1 p2", c=c, p1=p, p2=p)
    w_in = w_in.repeat_interleave(k, dim=2) / k  # (D, C, pt, p, p)
    bound = 1 / math.sqrt(c * pt * p * p)  # nn.Linear's init range for this fan-in
    noise = (torch.rand(w_in.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * bound
    noise = noise.unflatten(2, (-1, k))  # (D, C, old, k, p, p): the k copies of each source frame
    w_in = w_in + (noise - noise.mean(dim=3, keepdim=True)).flatten(2, 3)
    out["patch_in.weight"] = rearrange(w_in, "d c t p1 p2 -> d (c t p1 p2)")
    w_out = rearrange(state["patch_out.weight"], "(c t p1 p2) d -> c t p1 p2 d", c=c, p1=p, p2=p)
    out["patch_out.weight"] = rearrange(w_out.repeat_interleave(k, dim=1), "c t p1 p2 d -> (c t p1 p2) d")
    b_out = rearrange(state["patch_out.bias"], "(c t p1 p2) -> c t p1 p2", c=c, p1=p, p2=p)
    out["patch_out.bias"] = rearrange(b_out.repeat_interleave(k, dim=1), "c t p1 p2 -> (c t p1 p2)")
    return out
