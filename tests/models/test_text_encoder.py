import torch


def test_encodes_fixed_length_tokens_mask_and_normalized_pooled(text_encoder):
    emb = text_encoder(["a red ball moving left", ""])
    assert emb.tokens.shape == (2, text_encoder.max_length, 384)
    assert emb.mask.dtype == torch.bool and emb.mask[0].sum() > emb.mask[1].sum()
    assert torch.allclose(emb.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.count_nonzero(emb.tokens[~emb.mask]) == 0


def test_cache_returns_the_same_embedding_regardless_of_batch(text_encoder):
    alone = text_encoder(["a blue square sliding up"])
    text_encoder.cache.clear()
    batched = text_encoder(["something else entirely", "a blue square sliding up"])
    assert torch.equal(alone.tokens[0], batched.tokens[1])
    assert "a blue square sliding up" in text_encoder.cache


def test_paraphrases_are_closer_than_different_meanings(text_encoder):
    emb = text_encoder(["a red circle moving to the left", "red ball drifting left", "a green square moving up"])
    same = (emb.pooled[0] @ emb.pooled[1]).item()
    different = (emb.pooled[0] @ emb.pooled[2]).item()
    assert same > different
