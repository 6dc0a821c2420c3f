"""The torchrun entry point writes one video from two ranks."""

import subprocess
import sys

import pytest

from reelgen.rendering.video import read_video


@pytest.mark.slow
def test_torchrun_two_ranks_write_one_video(tiny_model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "reelgen.parallel.run",
           "a red circle moving left", "--model-dir", str(tiny_model_dir), "--steps", "2", "--sequence", "2",
           "--frames", "12", "--threads", "1", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "12 frames on 2 ranks" in done.stdout
    frames, _ = read_video(out)
    assert len(frames) == 12


@pytest.mark.slow
def test_a_layout_that_does_not_fit_the_job_fails_clearly(tiny_model_dir, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "reelgen.parallel.run",
           "a red circle", "--model-dir", str(tiny_model_dir), "--cfg", "2", "--sequence", "2",
           "-o", str(tmp_path / "x.mp4")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "needs 4 ranks, the job has 2" in done.stderr
