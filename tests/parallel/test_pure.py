"""The single-process pieces of the parallel package."""

import pytest
import torch
import torch.distributed as td

from reelgen.models.transformer import PRESETS
from reelgen.parallel import CFGParallel, parallelize, shard_model, unshard_model
from reelgen.parallel.comm import split_sizes
from reelgen.parallel.sequence import bytes_per_forward
from tests.tiny import make_tiny_model


@pytest.mark.parametrize("n, parts, expected",
                         [(8, 2, [4, 4]), (5, 2, [3, 2]), (7, 3, [3, 2, 2]), (2, 4, [1, 1, 0, 0])])
def test_split_sizes_match_tensor_split(n, parts, expected):
    assert split_sizes(n, parts) == expected == [len(p) for p in torch.arange(n).tensor_split(parts)]


def test_sequence_bytes_formula_for_the_small_models():
    # One frame per patch: 2 x 16 frames x 64 tokens, dim 128, fp32: each rank holds 2 MiB / 2 = 512 KiB of the
    # residual stream; 12 all-to-alls send half of it, the all-gather all of it.
    assert bytes_per_forward(PRESETS["small-framewise"], batch=2, frames=16, world=2) == 12 * 2**18 + 2**19
    # Tubelets of 2 frames: half the tokens, half the bytes.
    assert bytes_per_forward(PRESETS["small"], batch=2, frames=16, world=2) == 12 * 2**17 + 2**18
    assert bytes_per_forward(PRESETS["small"], batch=2, frames=16, world=1) == 0


def test_one_process_needs_no_parallelism():
    class Pipeline:
        model = make_tiny_model()

    pipeline = Pipeline()
    assert parallelize(pipeline) is pipeline and not hasattr(pipeline, "guidance")
    with pytest.raises(ValueError, match="needs 2 ranks"):
        parallelize(pipeline, cfg=2)
    with pytest.raises(ValueError, match="cfg must be 1 or 2"):
        parallelize(pipeline, cfg=3)


def test_wrappers_need_a_process_group():
    with pytest.raises(ValueError):  # torch: "Default process group has not been initialized"
        CFGParallel()
    model = make_tiny_model()
    with pytest.raises(ValueError):
        shard_model(model)
    assert not hasattr(model, "_sequence_shard")
    with pytest.raises(ValueError, match="not sharded"):
        unshard_model(model)


@pytest.fixture
def one_rank_group(tmp_path):
    td.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    td.destroy_process_group()


def test_shard_and_unshard_keep_weights_and_outputs(one_rank_group):
    from tests.parallel.ranks import model_inputs

    model = make_tiny_model()
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(*model_inputs(8))
        shard_model(model)
        with pytest.raises(ValueError, match="already sharded"):
            shard_model(model)
        sharded = model(*model_inputs(8))
        unshard_model(model)
        after = model(*model_inputs(8))
    assert list(model.state_dict()) == keys
    assert torch.equal(before, sharded) and torch.equal(before, after)
    assert "forward" not in model.blocks[0].attn_t.__dict__


def test_sequence_parallelism_is_for_inference(one_rank_group):
    from tests.parallel.ranks import model_inputs

    model = shard_model(make_tiny_model())
    with pytest.raises(RuntimeError, match="inference"):
        model(*model_inputs(8))
