"""CFG parallelism: the conditional and unconditional passes of guidance on two ranks (as in xDiT).

The two passes of classifier-free guidance are independent until they are
combined, so each rank runs one and an all_gather brings both back: every rank
ends the step with the same prediction, hence the same latents, and the
scheduler step stays replicated (it is elementwise and cheap).
"""

from __future__ import annotations

import torch
import torch.distributed as td

from reelgen.models.text_encoder import TextEmbedding
from reelgen.parallel.comm import Traffic, all_gather


class CFGParallel:
    """A drop-in for diffusion.guidance.guided_prediction on a group of exactly 2 ranks.

    Rank 0 of `group` runs the conditional pass, rank 1 the unconditional one;
    the model never knows. Assign it to `TextToVideoPipeline.guidance`.
    """

    def __init__(self, group: td.ProcessGroup | None = None, traffic: Traffic | None = None):
        if td.get_world_size(group) != 2:
            raise ValueError(f"CFG parallelism needs a group of 2 ranks, got {td.get_world_size(group)}")
        self.group, self.traffic = group, traffic
        self.rank = td.get_rank(group)

    def __call__(self, model, x: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                 scale: float | torch.Tensor) -> torch.Tensor:
        """x (B, C, F, H, W), t (B,) -> uncond + scale * (cond - uncond), shape of x, on both ranks."""
        # guidance off (one scale of 1; per-request scales come as a tensor): both ranks run the one pass
        # rather than wait for each other
        if not isinstance(scale, torch.Tensor) and scale == 1.0:
            return model(x, t, cond.tokens, cond.mask, cond.pooled)
        text = cond if self.rank == 0 else uncond
        mine = model(x, t, text.tokens, text.mask, text.pooled)  # (B, C, F, H, W)
        c, u = all_gather(mine, 0, [len(mine)] * 2, self.group, self.traffic).chunk(2)  # 2 x (B, C, F, H, W)
        return u + scale * (c - u)
