import torch
from torch import nn

from reelgen.training.ema import EMA


def _moved(ema: EMA, model: nn.Linear, target: float) -> float:
    """Share of the way to `target` the average moves in one update."""
    before = ema.model.weight.item()
    model.weight.data.fill_(target)
    ema.update(model)
    return (ema.model.weight.item() - before) / (target - before)


def test_average_follows_early_and_reaches_the_configured_decay():
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    ema = EMA(model, decay=0.999)
    assert _moved(ema, model, 1.0) > 0.8  # the first updates follow the model closely
    for _ in range(10_000):
        ema.update(model)
    # Well before 10k updates the full decay applies: each update moves 1 - 0.999 of the way.
    assert abs(_moved(ema, model, 2.0) - 0.001) < 1e-5
