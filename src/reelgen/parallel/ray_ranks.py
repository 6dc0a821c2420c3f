"""The ranks of one video as a group of Ray actors: the Ray launch of what torchrun launches in parallel.run.

Each rank is an actor, so a process of its own; with device "cuda" it reserves
one GPU and Ray's CUDA_VISIBLE_DEVICES makes "cuda" that GPU. The ranks are
reserved together in one placement group: all or none, so two groups starting
at once never hold half a group each and wait for each other forever; PACK puts
them on as few nodes as have room (NVLink rather than the network between GPUs),
STRICT_PACK on one node or not at all. Rank 0 opens the group's rendezvous
store on a port its OS picks (no free port to guess, no race for it) and the
driver hands its node's address and the port to the others. All join one torch.distributed group (nccl on GPUs, gloo
on CPUs: parallel.group.backend_for), load the pipeline once and spread it over
the group as torchrun's ranks do (parallel.run.spread). Every video then runs on
all ranks, and only rank 0's frames travel back.

    ray.init(address="auto")
    with RayRankGroup(model_dir, cfg=2) as group:
        frames = group(GenerationRequest(prompt="a red circle moving left"))  # uint8 (F, H, W, 3)
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import ray
import torch
import torch.distributed as td
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from reelgen.parallel.group import backend_for
from reelgen.parallel.run import load_pipeline, spread
from reelgen.pipelines.device import resolve_device
from reelgen.pipelines.request import GenerationRequest


class Rank:
    """One rank: joins the group, holds the spread pipeline, runs its share of every video."""

    def __init__(self, rank: int, world_size: int, device: str, threads: int):
        torch.set_num_threads(threads)
        self.rank, self.world_size = rank, world_size
        self.device = resolve_device(device)
        self.store: td.Store | None = None
        self.pipeline = None

    def host(self, timeout: float) -> tuple[str, int]:
        """Rank 0: open the group's store -> (this node's address, the port the OS gave it)."""
        address = ray.util.get_node_ip_address()
        self.store = td.TCPStore(address, 0, is_master=True, wait_for_workers=False,
                                 timeout=timedelta(seconds=timeout))
        return address, self.store.port

    def join(self, address: str, port: int, timeout: float, model_dir: str, layout: dict,
             overlap: int | None) -> str:
        """Join the group and load the spread pipeline -> the Ray node this rank runs on."""
        if self.store is None:
            self.store = td.TCPStore(address, port, is_master=False, timeout=timedelta(seconds=timeout))
        td.init_process_group(backend_for(self.device), store=self.store, rank=self.rank,
                              world_size=self.world_size, timeout=timedelta(seconds=timeout))
        self.pipeline = spread(load_pipeline(model_dir, self.device, overlap), **layout)
        return ray.get_runtime_context().get_node_id()

    def generate(self, request: GenerationRequest) -> np.ndarray | None:
        frames = self.pipeline([request])[0]  # (F, H, W, 3), the same on every rank
        return frames if self.rank == 0 else None


_RankActor = ray.remote(Rank)


class RayRankGroup:
    """cfg x sequence ranks (or `windows` ranks sharing a long video's windows) of the built-in model as Ray actors.

    Needs a connected Ray driver (ray.init). Each rank reserves `num_cpus` CPUs
    (and runs as many torch threads), one GPU with device "cuda", and any custom
    `resources`, placed by `strategy` (PACK, STRICT_PACK, SPREAD). The group
    loads once and generates any number of videos, one at a time; `nodes` holds
    each rank's Ray node id. A rank that fails ends the group (its peers would
    wait in a collective) and raises here. `timeout` bounds finding room, the
    join and each video.
    """

    def __init__(self, model_dir: str | Path, *, cfg: int = 1, sequence: int = 1, windows: int = 0,
                 overlap: int | None = None, device: str = "cpu", num_cpus: float = 1,
                 resources: dict[str, float] | None = None, strategy: str = "PACK", timeout: float = 600.0):
        if windows and (cfg, sequence) != (1, 1):
            raise ValueError("windows spreads whole windows over the ranks: use it without cfg and sequence")
        if torch.device(device).index is not None:
            raise ValueError(f"device {device!r}: Ray gives each rank a GPU of its own; use 'cuda'")
        self.world_size = windows or cfg * sequence
        self.timeout = timeout
        gpus = int(torch.device(device).type == "cuda")
        bundle = {k: v for k, v in {"CPU": num_cpus, "GPU": gpus, **(resources or {})}.items() if v}
        self._ranks: list = []
        self._placement = placement_group([bundle] * self.world_size, strategy=strategy)
        layout = {"windows": True} if windows else {"cfg": cfg, "sequence": sequence}
        try:
            if not ray.wait([self._placement.ready()], timeout=timeout)[0]:
                raise TimeoutError(f"the Ray cluster had no room for {self.world_size} ranks of {bundle} "
                                   f"({strategy}) within {timeout:g} s")
            for rank in range(self.world_size):
                place = PlacementGroupSchedulingStrategy(self._placement, placement_group_bundle_index=rank)
                actor = _RankActor.options(num_cpus=num_cpus, num_gpus=gpus, resources=resources or {},
                                           scheduling_strategy=place)
                self._ranks.append(actor.remote(rank, self.world_size, device, max(1, int(num_cpus))))
            address, port = self._all([self._ranks[0].host.remote(timeout)])[0]
            self.nodes: list[str] = self._all([r.join.remote(address, port, timeout, str(model_dir), layout, overlap)
                                               for r in self._ranks])
        except BaseException:
            self.close()
            raise

    def __call__(self, request: GenerationRequest) -> np.ndarray:
        """One video on every rank -> rank 0's uint8 (F, H, W, 3)."""
        if not self._ranks:
            raise RuntimeError("this rank group is closed")
        try:
            return self._all([r.generate.remote(request) for r in self._ranks])[0]
        except BaseException:
            self.close()
            raise

    def _all(self, refs: list) -> list:
        """Every rank's result; the first failure raises at once rather than after its peers time out."""
        deadline, pending = time.monotonic() + self.timeout, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                raise TimeoutError(f"{len(pending)} of {len(refs)} ranks gave no answer within {self.timeout:g} s")
            ray.get(done)
        return ray.get(refs)

    def close(self) -> None:
        """Stop the ranks and free their reservation; safe to call again."""
        for rank in self._ranks:
            ray.kill(rank)
        self._ranks = []
        if self._placement is not None:
            remove_placement_group(self._placement)
            self._placement = None

    def __enter__(self) -> "RayRankGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
