"""Sequence parallelism over frames for the VideoTransformer, Ulysses-style (Jacobs et al., 2023).

Each rank runs every block on a slice of the frames. Spatial attention,
cross-attention, the MLP and adaLN act within a frame (or per token), so they
need nothing from other ranks. Temporal attention needs every frame at each
token position: an all-to-all swaps the frame sharding for a sharding of the
B*N token positions, the block's own attention runs unchanged on all frames of
its positions, and a second all-to-all swaps back.

Sharding positions rather than heads (DeepSpeed-Ulysses shards heads) moves
the D-wide input and output of the attention instead of q, k, v and the
output, half the bytes (2D instead of 4D per token), works for any number of
ranks up to B*N rather than a divisor of the head count, and leaves the
attention module untouched.

Everything outside the blocks (patch embedding, positional embeddings, the
output head) is per token and cheap; it runs on all frames on every rank, so
the frame positions are right without the model knowing it is sharded. After
the last block an all_gather gives every rank all frames again.

Per step and per rank, sharded over P ranks, with T = B*F*N tokens of D float32:
2 * depth all-to-alls, each sending T/P * D * 4 * (P-1)/P bytes, and one
all_gather sending T/P * D * 4 * (P-1) bytes (see `bytes_per_forward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as td

from reelgen.models.transformer import VideoTransformer, VideoTransformerConfig
from reelgen.parallel.comm import Traffic, all_gather, all_to_all, split_sizes


@dataclass
class _Shard:
    """What the hooks of one sharded model share; frame_sizes is set by each forward."""

    group: td.ProcessGroup | None
    traffic: Traffic | None
    world: int
    rank: int
    frame_sizes: list[int] = field(default_factory=list)
    handles: list = field(default_factory=list)  # hook handles, for unshard_model


def shard_model(model: VideoTransformer, group: td.ProcessGroup | None = None,
                traffic: Traffic | None = None) -> VideoTransformer:
    """Make `model` run its blocks on this rank's slice of the frames, in place (as Wan2.1's shard_model).

    Hooks at the edges: the first block's input is sliced along frames, each
    block's temporal attention is wrapped in all-to-alls, and the last block's
    output is gathered. Weights and state_dict keys are untouched; every rank
    of `group` must call the model with the same inputs. Inference only.
    """
    if "_sequence_shard" in model.__dict__:
        raise ValueError("model is already sharded; unshard_model(model) first")
    shard = _Shard(group, traffic, td.get_world_size(group), td.get_rank(group))
    blocks = model.blocks
    shard.handles.append(blocks[0].register_forward_pre_hook(lambda module, args: _split(shard, *args)))
    shard.handles.append(blocks[-1].register_forward_hook(lambda module, args, out: _gather(shard, out)))
    for block in blocks:
        block.attn_t.forward = _temporal_forward(shard, block.attn_t.forward)
    model._sequence_shard = shard
    return model


def unshard_model(model: VideoTransformer) -> VideoTransformer:
    """Undo shard_model: the model runs on one process again."""
    if "_sequence_shard" not in model.__dict__:
        raise ValueError("model is not sharded")
    shard = model.__dict__.pop("_sequence_shard")
    for handle in shard.handles:
        handle.remove()
    for block in model.blocks:
        del block.attn_t.forward  # the class's forward shows through again
    return model


def _split(shard: _Shard, h: torch.Tensor, *rest):
    b, f, n, _ = h.shape  # (B, F, N, D)
    if torch.is_grad_enabled() and h.requires_grad:
        raise RuntimeError("sequence parallelism is for inference: run under torch.no_grad()")
    if f < shard.world or b * n < shard.world:
        raise ValueError(f"cannot shard {f} frames of {b * n} token positions over {shard.world} ranks")
    shard.frame_sizes = split_sizes(f, shard.world)
    return (h.tensor_split(shard.world, dim=1)[shard.rank], *rest)  # (B, F/P, N, D)


def _gather(shard: _Shard, h: torch.Tensor) -> torch.Tensor:
    return all_gather(h, 1, shard.frame_sizes, shard.group, shard.traffic)  # (B, F, N, D)


def _temporal_forward(shard: _Shard, attend):
    """Wrap a temporal Attention's forward: (B*N, F/P, D) in and out, attention over all F frames."""

    def forward(x: torch.Tensor, context=None, mask=None) -> torch.Tensor:
        if context is not None or mask is not None:
            raise ValueError("temporal attention is self-attention without a mask")
        positions = split_sizes(x.shape[0], shard.world)
        h = all_to_all(x, 0, 1, shard.frame_sizes, shard.group, shard.traffic)  # (B*N/P, F, D)
        h = attend(h)  # (B*N/P, F, D)
        return all_to_all(h, 1, 0, positions, shard.group, shard.traffic)  # (B*N, F/P, D)

    return forward


def bytes_per_forward(cfg: VideoTransformerConfig, batch: int, frames: int, world: int,
                      element_size: int = 4) -> float:
    """Bytes one rank sends in one forward of a batch, sharded over `world` ranks (evenly divided)."""
    if world == 1:
        return 0.0
    tokens = batch * frames // cfg.patch_frames * (cfg.resolution // cfg.patch_size) ** 2
    local = tokens / world * cfg.dim * element_size  # one rank's slice of the residual stream
    return 2 * cfg.depth * local * (world - 1) / world + local * (world - 1)
