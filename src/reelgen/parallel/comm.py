"""The collectives the parallel wrappers use, on tensors split unevenly over ranks, with a byte count.

gloo (CPU) and nccl (GPU) both implement `all_to_all_single` with per-rank
split sizes (checked on torch 2.13), so uneven splits need no padding there;
`all_gather` wants equal shapes, so uneven pieces are padded to the largest.
Collectives here are not autograd-aware: the wrappers serve inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass
class Traffic:
    """Bytes this rank sent to other ranks, as a ring algorithm (gloo, NCCL) moves them."""

    bytes_sent: int = 0
    calls: int = 0

    def add(self, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.calls += 1


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of `tensor_split(parts)` along a length-n dimension: the first n % parts pieces get one more."""
    q, r = divmod(n, parts)
    return [q + (i < r) for i in range(parts)]


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, gather_sizes: list[int],
               group: td.ProcessGroup | None = None, traffic: Traffic | None = None) -> torch.Tensor:
    """Split x along scatter_dim over the ranks and concatenate what arrives along gather_dim.

    Every rank must hold the same length along scatter_dim; rank j holds
    gather_sizes[j] along gather_dim. Pieces travel flattened, so their shapes
    may differ from rank to rank.
    """
    world, rank = td.get_world_size(group), td.get_rank(group)
    scatter_dim, gather_dim = scatter_dim % x.ndim, gather_dim % x.ndim
    if x.shape[gather_dim] != gather_sizes[rank]:
        raise ValueError(f"rank {rank} holds {x.shape[gather_dim]} along dim {gather_dim}, "
                         f"expected {gather_sizes[rank]}")
    send = [piece.reshape(-1) for piece in x.tensor_split(world, dim=scatter_dim)]
    mine = list(x.tensor_split(world, dim=scatter_dim)[rank].shape)
    recv_shapes = [mine[:gather_dim] + [n] + mine[gather_dim + 1:] for n in gather_sizes]
    recv_counts = [math.prod(s) for s in recv_shapes]
    out = x.new_empty(sum(recv_counts))
    td.all_to_all_single(out, torch.cat(send), recv_counts, [p.numel() for p in send], group=group)
    if traffic is not None:
        traffic.add(sum(p.numel() for j, p in enumerate(send) if j != rank) * x.element_size())
    return torch.cat([piece.view(s) for piece, s in zip(out.split(recv_counts), recv_shapes)], dim=gather_dim)


def all_gather(x: torch.Tensor, dim: int, sizes: list[int], group: td.ProcessGroup | None = None,
               traffic: Traffic | None = None) -> torch.Tensor:
    """Concatenate every rank's x along dim, in rank order; rank j holds sizes[j] along dim."""
    world, dim = td.get_world_size(group), dim % x.ndim
    longest = max(sizes)
    pad = [0, 0] * (x.ndim - 1 - dim) + [0, longest - x.shape[dim]]  # F.pad order: last dim first
    padded = torch.nn.functional.pad(x, pad).contiguous()
    pieces = [torch.empty_like(padded) for _ in range(world)]
    td.all_gather(pieces, padded, group=group)
    if traffic is not None:
        traffic.add(padded.numel() * padded.element_size() * (world - 1))
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(pieces, sizes)], dim=dim)


def all_reduce_sum(x: torch.Tensor, group: td.ProcessGroup | None = None,
                   traffic: Traffic | None = None) -> torch.Tensor:
    """Sum x over the ranks, in place, and return it."""
    world = td.get_world_size(group)
    td.all_reduce(x, op=td.ReduceOp.SUM, group=group)
    if traffic is not None:
        traffic.add(2 * x.numel() * x.element_size() * (world - 1) // world)  # ring: reduce-scatter + all-gather
    return x
