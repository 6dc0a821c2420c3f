import json

import pytest
import torch

from reelgen.evaluation.oracle import ATTRIBUTES
from reelgen.evaluation.runner import METRICS, SPLITS, run_eval
from reelgen.models.text_encoder import TextEncoder
from reelgen.models.transformer import PRESETS, VideoTransformer
from reelgen.pipelines.text_to_video import TextToVideoPipeline


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    model = VideoTransformer(PRESETS["test"])
    with torch.no_grad():  # a random model whose zero-initialized output layers still vary with their input
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return TextToVideoPipeline(model, TextEncoder())


def evaluate(pipeline, out_dir):
    return run_eval(pipeline, out_dir=out_dir, n_per_split=2, steps=2, guidance_scale=3.0, seed=7)


def test_writes_the_report(pipeline, tmp_path):
    results = evaluate(pipeline, tmp_path)
    assert json.loads((tmp_path / "eval.json").read_text()) == results
    for source in ("model", "reference"):
        for split in SPLITS:
            row = results[source][split]
            assert row["n"] == 2
            assert all(0 <= row[a] <= 1 for a in (*ATTRIBUTES, "all"))
            assert all(row[m] >= 0 for m in METRICS)
    assert results["speed"]["clip_seconds"] == 1.0  # the test model makes 8 frames, at 8 fps
    assert results["speed"]["seconds_per_clip"] > 0 and results["speed"]["realtime_factor"] > 0
    assert results["memory"]["peak_rss_mib"] > 0
    assert len(results["clips"]) == 4 and results["clips"][0]["truth"]["color"]
    report = (tmp_path / "eval.md").read_text()
    assert report.count("| model |") == 2 and report.count("| world (reference) |") == 2
    assert "real-time factor" in report


def test_is_deterministic(pipeline, tmp_path):
    first, second = evaluate(pipeline, tmp_path / "a"), evaluate(pipeline, tmp_path / "b")
    for key in ("settings", "model", "reference", "clips"):
        assert first[key] == second[key]


def test_rejects_bad_settings(pipeline, tmp_path):
    with pytest.raises(ValueError, match="sampler"):
        run_eval(pipeline, out_dir=tmp_path, n_per_split=1, steps=2, sampler="nope")
    assert not (tmp_path / "eval.json").exists()
