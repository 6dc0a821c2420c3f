"""The one choice of torch.distributed backend, for every process group reelgen starts.

torchrun jobs (parallel.run, training), the local ranks of tests and benchmarks
(parallel.launch) and Ray rank groups (parallel.ray_ranks) all join through it.
"""

from __future__ import annotations

import torch


def backend_for(device: str | torch.device) -> str:
    """nccl for ranks computing on CUDA GPUs, gloo for ranks on the CPU.

    nccl moves GPU memory only (over NVLink or InfiniBand where present);
    gloo works on CPU tensors, and would copy GPU ones through host memory.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return "nccl"
    if kind == "cpu":
        return "gloo"
    raise ValueError(f"no process-group backend for {kind!r} ranks; run them on cpu (gloo) or cuda (nccl)")
