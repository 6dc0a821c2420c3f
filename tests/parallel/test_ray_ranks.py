"""Ranks of one video as Ray actors, on a real two-node Ray cluster on this machine.

Each node has one CPU and each rank reserves one, so the two ranks of a group run on different nodes and
join over TCP, as on a real cluster.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from reelgen.pipelines.text_to_video import TextToVideoPipeline
from reelgen.pipelines.request import GenerationRequest
from reelgen.rendering.video import read_video
from tests.parallel.ranks import REQUEST
from tests.service.ray_cluster import ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster({"head_node": 1}, {"second_node": 1}) as address:
        yield address


@pytest.fixture(scope="module")
def driver(cluster):
    import ray

    ray.init(address=cluster, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("layout, frames", [({"cfg": 2}, 8), ({"sequence": 2}, 7)])
def test_a_group_of_rank_actors_gives_the_one_process_video(driver, tiny_model_dir, text_encoder, layout, frames):
    import ray

    from reelgen.parallel.ray_ranks import RayRankGroup

    request = GenerationRequest(frames=frames, **REQUEST)
    expected = TextToVideoPipeline.from_pretrained(tiny_model_dir, text_encoder)([request])[0]
    group = RayRankGroup(tiny_model_dir, **layout)
    assert group.world_size == 2 and len(set(group.nodes)) == 2  # one CPU per node: PACK had to use both
    video = group(request)
    # the tolerance of tests/parallel/test_two_ranks.py: only the order of float32 sums differs
    assert video.shape == expected.shape
    assert np.abs(video.astype(int) - expected.astype(int)).max() <= 1

    # a request every rank refuses raises here, and ends the group: its actors are gone
    ranks = list(group._ranks)
    with pytest.raises(ValueError, match="frames must be between 2 and"):
        group(GenerationRequest(frames=1000, **REQUEST))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(ranks[0].generate.remote(request), timeout=60)


def test_a_group_the_cluster_has_no_room_for_fails_clearly(driver, tiny_model_dir):
    from reelgen.parallel.ray_ranks import RayRankGroup

    with pytest.raises(TimeoutError, match=r"no room for 2 ranks of \{'CPU': 1\} \(STRICT_PACK\) within 3 s"):
        RayRankGroup(tiny_model_dir, cfg=2, strategy="STRICT_PACK", timeout=3)  # one node has 1 CPU, not 2


def test_parallel_run_starts_its_ranks_on_ray_and_writes_rank_0s_video(cluster, tiny_model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    done = subprocess.run([sys.executable, "-m", "reelgen.parallel.run", "a red circle moving left", "--model-dir",
                           str(tiny_model_dir), "--steps", "2", "--windows", "--ranks", "2", "--frames", "12",
                           "--ray", cluster, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 frames on 2 Ray ranks over 2 node(s)" in done.stdout
    frames, _ = read_video(out)
    assert len(frames) == 12
