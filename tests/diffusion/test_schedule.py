import math

import pytest
import torch

from reelgen.diffusion.guidance import guided_prediction
from reelgen.diffusion.pixels import frames_to_model, lab_to_rgb, model_to_frames, rgb_to_lab
from reelgen.diffusion.schedule import SAMPLERS, make_scheduler, training_scheduler
from reelgen.models.text_encoder import TextEmbedding
from reelgen.pipelines.request import SAMPLER_NAMES
from tests.tiny import make_tiny_model


def test_cosine_schedule_matches_the_formula():
    sched = training_scheduler()
    s = 0.008

    def alpha_bar(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    expected = []
    prod = 1.0
    for i in range(1000):
        beta = min(1 - alpha_bar((i + 1) / 1000) / alpha_bar(i / 1000), 0.999)
        prod *= 1 - beta
        expected.append(prod)
    assert torch.allclose(sched.alphas_cumprod.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4)
    assert sched.config.prediction_type == "v_prediction"


def test_every_sampler_is_a_configured_diffusers_scheduler():
    assert tuple(SAMPLERS) == SAMPLER_NAMES
    for name in ("ddim", "dpm++", "unipc", "euler"):
        sched = make_scheduler(name)
        assert type(sched).__module__.startswith("diffusers.")
        assert sched.config.beta_schedule == "squaredcos_cap_v2"
        assert sched.config.prediction_type == "v_prediction"
        sched.set_timesteps(10)
        assert int(sched.timesteps[0]) == 999 and len(sched.timesteps) == 10


@pytest.mark.parametrize("name", ["ddim", "dpm++", "unipc", "ddpm"])
def test_samplers_clip_the_clean_clip_estimate_to_the_pixel_range(name):
    # A denoiser whose clean-clip estimate is 3 everywhere (as heavy guidance gives): the sample ends at 1.
    sched = make_scheduler(name)
    sched.set_timesteps(5)
    ab = sched.alphas_cumprod
    x = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in sched.timesteps:
        a, s = ab[t].sqrt(), (1 - ab[t]).sqrt()
        v = (a * x - 3.0) / s  # v-prediction: x0 = a * x - s * v
        extra = {"generator": torch.Generator().manual_seed(1)} if name == "ddpm" else {}  # ddpm adds fresh noise
        x = sched.step(v, t, x, **extra).prev_sample
    assert torch.allclose(x, torch.ones_like(x), atol=1e-3)


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(ValueError, match="ddim, dpm\\+\\+"):
        make_scheduler("plms")


def test_velocity_and_noise_are_consistent():
    sched = training_scheduler()
    x0, noise = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    t = torch.tensor([5, 800])
    xt = sched.add_noise(x0, noise, t)
    v = sched.get_velocity(x0, noise, t)
    ab = sched.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    assert torch.allclose(ab.sqrt() * xt - (1 - ab).sqrt() * v, x0, atol=1e-5)


def test_batched_guidance_equals_two_separate_passes(text_encoder):
    model = make_tiny_model()
    cond, uncond = text_encoder(["a red ball"]), text_encoder(["a blue box"])
    x = torch.randn(1, 3, 8, 16, 16)
    t = torch.tensor([500.0])
    c = model(x, t, cond.tokens, cond.mask, cond.pooled)
    u = model(x, t, uncond.tokens, uncond.mask, uncond.pooled)
    out = guided_prediction(model, x, t, cond, uncond, 4.0)
    assert torch.allclose(out, u + 4.0 * (c - u), atol=1e-5)
    assert torch.allclose(guided_prediction(model, x, t, cond, uncond, 1.0), c)


def test_text_embedding_cat_and_index_round_trip(text_encoder):
    emb = text_encoder(["a", "b"])
    again = TextEmbedding.cat([emb[0:1], emb[1:2]])
    assert torch.equal(again.tokens, emb.tokens) and torch.equal(again.mask, emb.mask)


def test_lab_round_trip_and_known_values():
    rgb = torch.rand(100, 3)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    red = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.05)


@pytest.mark.parametrize("space", ["rgb", "lab"])
def test_model_space_round_trip_is_exact_on_uint8(space):
    frames = torch.randint(0, 256, (2, 3, 5, 5, 3), dtype=torch.uint8).numpy()
    x = frames_to_model(frames, space)
    assert x.shape == (2, 3, 3, 5, 5) and x.abs().max() <= 1.05
    assert (model_to_frames(x, space) == frames).all()
