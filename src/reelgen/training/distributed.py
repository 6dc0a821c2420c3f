"""Data-parallel training over several processes with torch.distributed.

Launched by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); gloo on CPU, nccl on GPU (parallel.group.backend_for). A plain `python`
launch is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reelgen.parallel.group import backend_for


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP averages gradients across ranks during backward; one process needs no wrapper."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([int(flag)], device=self.device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item())

    def teardown(self) -> None:
        """Leave the group together: a rank that destroys it while another still communicates can hang both."""
        if self.world_size > 1:
            td.barrier()
            td.destroy_process_group()


def setup(device: str | torch.device | None = None) -> Distributed:
    """Join the torchrun job, computing on `device`: by default this rank's GPU if there is one, else the CPU.
    A "cuda" without an index means this rank's GPU, cuda:LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    if world_size > 1 and not td.is_initialized():
        td.init_process_group(backend=backend_for(device))
    return Distributed(rank, world_size, device)
