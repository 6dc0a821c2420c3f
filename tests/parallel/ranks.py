"""What each rank of the multi-process tests runs (spawned processes import this module by name)."""

from __future__ import annotations

import zlib

import torch
import torch.distributed as td

from reelgen.models.text_encoder import TextEmbedding
from reelgen.pipelines.request import GenerationRequest
from tests.tiny import make_tiny_model

PROMPT = "a red ball moving left on a black background"
REQUEST = dict(prompt=PROMPT, seed=3, steps=2, sampler="dpm++")


class StubTextEncoder:
    """A seeded random embedding per prompt: the ranks need no MiniLM, and the tests are about parallelism."""

    def __call__(self, prompts: list[str]) -> TextEmbedding:
        parts = []
        for p in prompts:
            g = torch.Generator().manual_seed(zlib.crc32(p.encode()))
            length = 1 + len(p.split())
            mask = torch.arange(32) < length  # (L,)
            tokens = torch.randn(1, 32, 384, generator=g) * mask[None, :, None]
            pooled = torch.nn.functional.normalize(torch.randn(1, 384, generator=g))
            parts.append(TextEmbedding(tokens, mask[None], pooled))
        return TextEmbedding.cat(parts)


def model_inputs(frames: int, batch: int = 1):
    """Seeded (x, t, text tokens, mask, pooled) for a forward of the tiny model."""
    g = torch.Generator().manual_seed(1)
    emb = StubTextEncoder()([PROMPT, "a blue square"][:batch] if batch <= 2 else [PROMPT] * batch)
    x = torch.randn(batch, 3, frames, 16, 16, generator=g)  # (B, C, F, H, W)
    return x, torch.full((batch,), 500.0), emb.tokens, emb.mask, emb.pooled


def guidance_inputs(frames: int = 8):
    x, t, *_ = model_inputs(frames)
    enc = StubTextEncoder()
    return x, t, enc([PROMPT]), enc([""])


def pipeline(cls=None, **kw):
    from reelgen.pipelines.text_to_video import TextToVideoPipeline

    return (cls or TextToVideoPipeline)(make_tiny_model(), StubTextEncoder(), **kw)


def forward_checks() -> dict:
    """Every two-rank check of one model step in one job: starting processes costs seconds on 2 busy cores."""
    from reelgen.parallel import CFGParallel, Traffic, shard_model
    from reelgen.pipelines.long_video import LongVideoPipeline

    out = {}
    with torch.no_grad():
        for frames, batch in ((8, 1), (5, 2)):  # even and uneven frame slices
            traffic = Traffic()
            model = shard_model(make_tiny_model(), traffic=traffic)
            out[f"sequence_model_{frames}x{batch}"] = model(*model_inputs(frames, batch))
            out[f"sequence_bytes_{frames}x{batch}"] = traffic.bytes_sent
        traffic = Traffic()
        out["cfg_prediction"] = CFGParallel(traffic=traffic)(make_tiny_model(), *guidance_inputs(), 5.0)
        out["cfg_bytes"] = traffic.bytes_sent
        windows = LongVideoPipeline(make_tiny_model(), StubTextEncoder(), group=td.group.WORLD)
        out["windows_prediction"] = windows.predict(*guidance_inputs(20), 5.0)
    return out


def video_checks() -> dict:
    """Whole denoising loops on two ranks, each mode."""
    from reelgen.parallel import parallelize
    from reelgen.pipelines.long_video import LongVideoPipeline

    return {
        "cfg_video": parallelize(pipeline(), cfg=2)([GenerationRequest(frames=8, **REQUEST)]),
        "sequence_video": parallelize(pipeline(), sequence=2)([GenerationRequest(frames=7, **REQUEST)]),
        "windows_video": pipeline(LongVideoPipeline, group=td.group.WORLD)([GenerationRequest(frames=20, **REQUEST)]),
    }


def four_rank_video():
    from reelgen.parallel import parallelize

    return parallelize(pipeline(), cfg=2, sequence=2)([GenerationRequest(frames=8, **REQUEST)])
