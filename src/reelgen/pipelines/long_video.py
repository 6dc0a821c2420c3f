"""Videos longer than the model's native length: overlapping temporal windows blended at every step.

MultiDiffusion (Bar-Tal et al., 2023) over time: each denoising step runs the
model on windows of its native length, and each frame's prediction is the
weighted average of the predictions of the windows that cover it. Because the
blend happens at every step, neighbouring windows agree more and more on their
shared frames as noise is removed, instead of being cut together at the end.
Weights ramp linearly across each overlap, so a frame hands over from one
window to the next gradually rather than at a hard edge.

Windows are independent within a step, so given a process group (td.group.WORLD
for the default one) each rank predicts every P-th window and one all_reduce
sums the weighted predictions; all ranks keep the same latents.
"""

from __future__ import annotations

import torch
import torch.distributed as td

from reelgen.diffusion.guidance import guided_prediction
from reelgen.models.text_encoder import TextEmbedding, TextEncoder
from reelgen.models.transformer import VideoTransformer
from reelgen.parallel.comm import Traffic, all_reduce_sum
from reelgen.pipelines.text_to_video import Guidance, TextToVideoPipeline

# Without a limit a request could ask for hours of frames; this many native lengths is plenty.
DEFAULT_MAX_WINDOWS = 8


def temporal_windows(total: int, length: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of `length` frames, overlapping by at least `overlap`, covering `total` frames.

    The last window is moved back to end at `total`, so every window has the
    native length; its overlap with the one before may then be larger.
    """
    if not 0 <= overlap < length:
        raise ValueError(f"overlap must be between 0 and {length - 1} frames, got {overlap}")
    if total <= length:
        return [(0, total)]
    stride = length - overlap
    starts = list(range(0, total - length, stride)) + [total - length]
    return [(s, s + length) for s in starts]


def window_weights(windows: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-frame blending weight (length,) of each window: linear ramps across its overlaps, 1 elsewhere.

    Across an overlap of o frames one window ramps down o/(o+1) ... 1/(o+1)
    while the next ramps up 1/(o+1) ... o/(o+1): the two always sum to 1.
    """
    weights = []
    for k, (start, end) in enumerate(windows):
        left = windows[k - 1][1] - start if k > 0 else 0  # frames shared with the previous window
        right = end - windows[k + 1][0] if k + 1 < len(windows) else 0  # ... with the next one
        i = torch.arange(end - start, dtype=torch.float32)
        weights.append(torch.minimum(torch.minimum((i + 1) / (left + 1), (end - start - i) / (right + 1)),
                                     torch.ones(())))
    return weights


def window_edges(windows: list[tuple[int, int]]) -> list[int]:
    """Frames f where some window starts or ends (0 < f < total): the pair (f-1, f) crosses a seam."""
    total = windows[-1][1]
    return sorted({s for s, _ in windows if s > 0} | {e for _, e in windows if e < total})


class LongVideoPipeline(TextToVideoPipeline):
    """TextToVideoPipeline for up to `max_frames` frames: overlapping native-length windows blended every step.

    `overlap` frames are shared by neighbouring windows (default: half the
    native length); with `group`, the ranks of that process group share out the
    windows of each step (every rank must run the same requests).
    """

    def __init__(self, model: VideoTransformer, text_encoder: TextEncoder, guidance: Guidance = guided_prediction,
                 *, max_frames: int | None = None, overlap: int | None = None,
                 group: td.ProcessGroup | None = None, traffic: Traffic | None = None):
        super().__init__(model, text_encoder, guidance)
        native = model.cfg.frames
        self._max_frames = DEFAULT_MAX_WINDOWS * native if max_frames is None else max_frames
        self.overlap = native // 2 if overlap is None else overlap
        temporal_windows(native + 1, native, self.overlap)  # fail now on a bad overlap, not at the first step
        self.group, self.traffic = group, traffic

    @property
    def max_frames(self) -> int:
        return self._max_frames

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                scale: float) -> torch.Tensor:
        """x (B, C, F, H, W) with F up to max_frames -> the window-blended guided prediction, shape of x."""
        windows = temporal_windows(x.shape[2], self.model.cfg.frames, self.overlap)
        weights = window_weights(windows)
        world, rank = (td.get_world_size(self.group), td.get_rank(self.group)) if self.group is not None else (1, 0)
        total = torch.zeros_like(x)  # (B, C, F, H, W): sum of weighted predictions
        for (start, end), w in list(zip(windows, weights))[rank::world]:
            pred = super().predict(x[:, :, start:end], t, cond, uncond, scale)  # (B, C, f, H, W)
            total[:, :, start:end] += w.to(x.device)[:, None, None] * pred
        if world > 1:
            all_reduce_sum(total, self.group, self.traffic)
        norm = torch.zeros(x.shape[2], device=x.device)  # (F,): sum of weights per frame
        for (start, end), w in zip(windows, weights):
            norm[start:end] += w.to(x.device)
        return total / norm[:, None, None]  # (B, C, F, H, W)
