import torch

from reelgen.diffusion.objective import sample_timesteps


def test_uniform_timesteps_cover_the_whole_range():
    t = sample_timesteps(20_000, 1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    assert abs(t.float().mean().item() - 499.5) < 10


def test_a_shift_draws_noisier_timesteps_more_often():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = sample_timesteps(20_000, 1000, generator=g())
    shifted = sample_timesteps(20_000, 1000, shift=3.0, generator=g())
    assert abs((plain >= 500).float().mean().item() - 0.5) < 0.02
    # P(t >= 500) = 1 - u* where 3u*/(1+2u*) = 0.5, u* = 0.25
    assert abs((shifted >= 500).float().mean().item() - 0.75) < 0.02
    assert shifted.min() >= 0 and shifted.max() <= 999


def test_no_shift_replays_the_draws_of_runs_made_before_it():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(sample_timesteps(16, 1000, generator=g()), torch.randint(0, 1000, (16,), generator=g()))
