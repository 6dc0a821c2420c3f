import pytest
import torch
from einops import rearrange

from reelgen.models.transformer import PRESETS, VideoTransformer, VideoTransformerConfig, inflate_patches, load_config
from tests.tiny import make_tiny_model


def _inputs(model, b=2, frames=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    f = frames or cfg.frames
    x = torch.randn(b, cfg.channels, f, cfg.resolution, cfg.resolution, generator=g)
    t = torch.tensor([10.0, 900.0])[:b]
    text = torch.randn(b, 6, cfg.text_dim, generator=g)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[:, 4:] = False
    pooled = torch.randn(b, cfg.text_dim, generator=g)
    return x, t, text, mask, pooled


def test_output_shape_matches_input_for_any_frame_count():
    model = make_tiny_model()
    for frames in (2, 5, 8):
        x, *rest = _inputs(model, frames=frames)
        assert model(x, *rest).shape == x.shape


def test_fresh_model_outputs_zero_adaln_zero():
    model = VideoTransformer(PRESETS["test"]).eval()
    out = model(*_inputs(model))
    assert torch.count_nonzero(out) == 0


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = make_tiny_model(seed=3)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = VideoTransformer.from_pretrained(tmp_path)
    assert loaded.cfg == model.cfg
    inputs = _inputs(model)
    assert torch.equal(model(*inputs), loaded(*inputs))


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_config(tmp_path)
    make_tiny_model().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        VideoTransformer.from_pretrained(tmp_path)


def test_text_mask_hides_padding_tokens():
    model = make_tiny_model()
    x, t, text, mask, pooled = _inputs(model)
    changed = text.clone()
    changed[:, 4:] += 100.0  # only masked positions change
    assert torch.allclose(model(x, t, text, mask, pooled), model(x, t, changed, mask, pooled), atol=1e-6)
    changed[:, 0] += 1.0  # a real token changes
    assert not torch.allclose(model(x, t, text, mask, pooled), model(x, t, changed, mask, pooled), atol=1e-6)


def test_temporal_attention_mixes_frames_and_spatial_attention_mixes_positions():
    model = make_tiny_model()
    x, *rest = _inputs(model)
    base = model(x, *rest)
    poked = x.clone()
    poked[:, :, 0, :4, :4] += 1.0  # first frame, first patch
    diff = (model(poked, *rest) - base).abs()
    assert diff[:, :, 1:].amax() > 1e-4  # other frames feel it (temporal attention)
    assert diff[:, :, 0, 8:, 8:].amax() > 1e-4  # other patches of the frame feel it (spatial attention)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        model = make_tiny_model().train()
        model.gradient_checkpointing = ckpt
        model(*_inputs(model)).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="patch_size"):
        VideoTransformerConfig(resolution=30, patch_size=4)
    with pytest.raises(ValueError, match="heads"):
        VideoTransformerConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="color_space"):
        VideoTransformerConfig(color_space="hsv")
    with pytest.raises(ValueError, match="patch_frames"):
        VideoTransformerConfig(frames=15, patch_frames=2)


def test_wrong_resolution_is_rejected():
    model = make_tiny_model()
    x, *rest = _inputs(model)
    with pytest.raises(ValueError, match="16x16"):
        model(x[..., :8, :8], *rest)


def test_shipped_model_fits_the_size_budget():
    from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR

    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    assert load_config(DEFAULT_MODEL_DIR) is not None


def test_tubelets_keep_the_clip_shape_and_refuse_a_frame_count_they_do_not_divide():
    model = make_tiny_model(patch_frames=2)
    for frames in (2, 6, 8):
        x, *rest = _inputs(model, frames=frames)
        assert model(x, *rest).shape == x.shape
    x, *rest = _inputs(model, frames=5)
    with pytest.raises(ValueError, match="multiple of 2 frames"):
        model(x, *rest)


def test_tubelet_frames_are_predicted_separately():
    model = make_tiny_model(patch_frames=2)
    x, *rest = _inputs(model)
    poked = x.clone()
    poked[:, :, 1] += 1.0  # the second frame of the first tubelet only
    diff = (model(poked, *rest) - model(x, *rest)).abs()
    assert diff[:, :, 0].amax() > 1e-4 and diff[:, :, 1].amax() > 1e-4
    assert not torch.allclose(diff[:, :, 0], diff[:, :, 1])  # two frames of a token get their own pixels


def test_inflated_weights_embed_a_tubelet_of_equal_frames_as_the_source_embeds_one_frame():
    source = make_tiny_model(seed=1)
    target = VideoTransformer(VideoTransformerConfig(**{**source.cfg.__dict__, "patch_frames": 2})).eval()
    target.load_state_dict(inflate_patches(source.state_dict(), target.cfg))
    p = source.cfg.patch_size
    frames = torch.randn(1, 3, 4, 16, 16)  # (B, C, F, H, W)
    doubled = frames.repeat_interleave(2, dim=2)  # each frame twice: tubelets of equal frames
    one = rearrange(frames, "b c f (h p1) (w p2) -> b f (h w) (c p1 p2)", p1=p, p2=p)
    two = rearrange(doubled, "b c (f pt) (h p1) (w p2) -> b f (h w) (c pt p1 p2)", pt=2, p1=p, p2=p)
    assert torch.allclose(target.patch_in(two), source.patch_in(one), atol=1e-6)
    # The head writes the source's prediction to both frames of a tubelet.
    h = torch.randn(5, source.cfg.dim)
    out = rearrange(target.patch_out(h), "n (c pt q) -> n c pt q", c=3, pt=2)
    src = rearrange(source.patch_out(h), "n (c q) -> n c q", c=3)
    assert torch.allclose(out[:, :, 0], src, atol=1e-6) and torch.allclose(out[:, :, 1], src, atol=1e-6)
    # The frames of a tubelet still get their own input weights, or training would sit on a saddle.
    w = rearrange(target.patch_in.weight, "d (c pt q) -> d c pt q", c=3, pt=2)
    assert (w[:, :, 0] - w[:, :, 1]).abs().mean() > 0.01
    # All other weights are the source's.
    inflated = target.state_dict()
    assert all(torch.equal(v, inflated[k]) for k, v in source.state_dict().items() if not k.startswith("patch_"))


def test_inflation_refuses_patches_it_cannot_repeat():
    source = make_tiny_model(patch_frames=2)
    with pytest.raises(ValueError, match="cannot inflate"):
        inflate_patches(source.state_dict(), VideoTransformerConfig(**{**source.cfg.__dict__, "patch_frames": 1,
                                                                       "frames": 8}))
