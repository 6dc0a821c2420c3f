import pytest
import torch

from reelgen.models.transformer import PRESETS, VideoTransformer, VideoTransformerConfig, load_config
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


def test_wrong_resolution_is_rejected():
    model = make_tiny_model()
    x, *rest = _inputs(model)
    with pytest.raises(ValueError, match="16x16"):
        model(x[..., :8, :8], *rest)


def test_shipped_model_fits_the_size_budget():
    from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR

    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    assert load_config(DEFAULT_MODEL_DIR) is not None
