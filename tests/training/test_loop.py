import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from reelgen.diffusion.objective import diffusion_loss
from reelgen.models import transformer
from reelgen.diffusion.schedule import training_scheduler
from reelgen.training.loop import TrainConfig, train
from tests.tiny import make_tiny_model


def _cfg(out, **kw):
    return TrainConfig(**{"out_dir": str(out), "preset": "test", "batch_size": 2, "steps": 4, "warmup_steps": 2,
                          "checkpoint_every": 2, **kw})


def test_training_writes_checkpoint_ema_and_log(tmp_path):
    ema_dir = train(_cfg(tmp_path, temporal_weight=0.5), progress=False)
    assert (ema_dir / "model.safetensors").is_file() and (ema_dir / "config.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["temporal"] > 0 for r in rows)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train(_cfg(tmp_path / "straight"), progress=False)
    train(_cfg(tmp_path / "resumed", steps=2), progress=False)
    train(_cfg(tmp_path / "resumed"), progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ema_a = load_file(tmp_path / "straight" / "ema" / "model.safetensors")
    ema_b = load_file(tmp_path / "resumed" / "ema" / "model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_resume_drops_log_rows_of_steps_after_the_checkpoint(tmp_path):
    train(_cfg(tmp_path, steps=2), progress=False)
    with (tmp_path / "log.jsonl").open("a") as log:  # a run killed at step 3, after its last checkpoint
        log.write(json.dumps({"step": 3, "loss": 9.0}) + "\n")
    train(_cfg(tmp_path), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["loss"] != 9.0


def test_resume_refuses_a_different_model(tmp_path):
    train(_cfg(tmp_path, steps=1), progress=False)
    with pytest.raises(ValueError, match="another --out-dir"):
        train(_cfg(tmp_path, color_space="lab"), progress=False)


@pytest.mark.parametrize("kw", [{"precision": "bf16"}, {"gradient_checkpointing": True}, {"color_space": "lab"},
                                {"timestep_shift": 3.0}])
def test_training_options_run(tmp_path, kw):
    train(_cfg(tmp_path, steps=1, **kw), progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_init_from_starts_a_tubelet_run_from_inflated_frame_weights(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(transformer.PRESETS, "test-tubelets", replace(transformer.PRESETS["test"], patch_frames=2))
    source = train(_cfg(tmp_path / "framewise", steps=2), progress=False)
    # lr 0: the one step leaves the weights where --init-from put them.
    train(_cfg(tmp_path / "tubelets", preset="test-tubelets", steps=1, lr=0.0, init_from=str(source)), progress=False)
    weights = torch.load(tmp_path / "tubelets" / "checkpoint.pt", weights_only=True)["model"]
    expected = transformer.inflate_patches(load_file(source / "model.safetensors"),
                                           transformer.PRESETS["test-tubelets"])
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert weights["patch_in.weight"].shape[1] == 2 * load_file(source / "model.safetensors")["patch_in.weight"].shape[1]


def test_init_from_refuses_another_architecture(tmp_path):
    source = train(_cfg(tmp_path / "small", steps=1), progress=False)
    with pytest.raises(ValueError, match="another architecture"):
        train(_cfg(tmp_path / "other", preset="small", steps=1, init_from=str(source)), progress=False)


def test_max_minutes_stops_after_a_checkpoint(tmp_path):
    train(_cfg(tmp_path, steps=100, checkpoint_every=50, max_minutes=0.0), progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_temporal_term_compares_frame_differences(text_encoder):
    model = make_tiny_model()
    x0 = torch.rand(2, 3, 8, 16, 16) * 2 - 1
    text = text_encoder(["a", "b"])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sched = training_scheduler()
    plain = diffusion_loss(model, x0, text, sched, generator=g())
    both = diffusion_loss(model, x0, text, sched, temporal_weight=2.0, generator=g())
    assert plain.temporal == 0 and both.temporal > 0
    assert torch.allclose(both.total, both.diffusion + 2.0 * both.temporal)
    assert torch.allclose(plain.diffusion, both.diffusion)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="timestep_shift"):
        TrainConfig(timestep_shift=0)


@pytest.mark.slow
def test_data_parallel_training_with_torchrun_over_gloo(tmp_path):
    # --standalone: rendezvous on a free local port (a fixed one can be taken by another run)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "reelgen.cli", "train", "--preset", "test", "--steps", "3", "--batch-size", "2",
           "--checkpoint-every", "3", "--out-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]  # rank 0 alone logs
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3
