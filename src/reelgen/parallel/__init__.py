"""Wrappers that run one video over several processes; the model never knows.

- cfg.CFGParallel: the two passes of classifier-free guidance on two ranks.
- sequence.shard_model: each rank runs the transformer blocks on a slice of the frames.
- mesh.parallelize: both at once over a (cfg, sequence) mesh of ranks.
- pipelines.long_video.LongVideoPipeline(group=...): temporal windows spread over ranks.
- launch.run_ranks spawns local ranks (tests, benchmarks); run.py is the torchrun entry;
  ray_ranks.RayRankGroup makes the ranks Ray actors; group.backend_for picks nccl or gloo.
"""

from reelgen.parallel.cfg import CFGParallel
from reelgen.parallel.comm import Traffic
from reelgen.parallel.mesh import parallelize
from reelgen.parallel.sequence import shard_model, unshard_model

__all__ = ["CFGParallel", "Traffic", "parallelize", "shard_model", "unshard_model"]
