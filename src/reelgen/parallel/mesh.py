"""Spread one pipeline over the ranks of a torch.distributed job: CFG x sequence parallelism.

With cfg=2 and sequence=S on 2*S ranks, the ranks form a (2, S) device mesh:
the S ranks of a row share one guidance branch and split its frames; the 2
ranks of a column hold the same frames of the two branches.
"""

from __future__ import annotations

import torch.distributed as td
from torch.distributed.device_mesh import init_device_mesh

from reelgen.parallel.cfg import CFGParallel
from reelgen.parallel.comm import Traffic
from reelgen.parallel.sequence import shard_model


def parallelize(pipeline, *, cfg: int = 1, sequence: int = 1, traffic: Traffic | None = None):
    """Make a TextToVideoPipeline run over cfg * sequence ranks (the whole default group), in place.

    Every rank must call this, then call the pipeline with the same requests;
    every rank gets the same frames back. cfg is 1 or 2 (passes of guidance).
    """
    if cfg not in (1, 2):
        raise ValueError(f"cfg parallelism splits the 2 passes of guidance: cfg must be 1 or 2, got {cfg}")
    if sequence < 1:
        raise ValueError(f"sequence must be >= 1, got {sequence}")
    world = td.get_world_size() if td.is_initialized() else 1
    if cfg * sequence != world:
        raise ValueError(f"cfg {cfg} x sequence {sequence} needs {cfg * sequence} ranks, the job has {world}")
    if world == 1:
        return pipeline
    device = next(pipeline.model.parameters()).device.type
    mesh = init_device_mesh(device, (cfg, sequence), mesh_dim_names=("cfg", "sequence"))
    if sequence > 1:
        shard_model(pipeline.model, mesh["sequence"].get_group(), traffic)
    if cfg > 1:
        pipeline.guidance = CFGParallel(mesh["cfg"].get_group(), traffic)
    return pipeline
