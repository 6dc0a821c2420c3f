"""Start the ranks of one small torch.distributed job on this machine and collect what each returns.

For tests and benchmarks on the CPU. torchrun (see parallel.run) and Ray
(parallel.ray_ranks) launch real jobs.
"""

from __future__ import annotations

import os
import pickle
import queue
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as td
import torch.multiprocessing as mp

from reelgen.parallel.group import backend_for


def run_ranks(fn: Callable, world_size: int, *args, threads: int = 1, timeout: float = 300.0) -> list:
    """Run fn(*args) on world_size fresh CPU processes joined in one group; its return values in rank order.

    fn must be importable by name (spawned processes re-import it) and return
    something picklable. Each rank uses `threads` torch threads. The first
    rank to fail raises here with its traceback; a hung job times out.
    """
    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"  # a file rendezvous: no port to pick, no race for it
        procs = [ctx.Process(target=_rank_main, args=(fn, rank, world_size, str(store), threads, args, results),
                             daemon=True) for rank in range(world_size)]
        for p in procs:
            p.start()
        try:
            out: dict[int, object] = {}
            for _ in range(world_size):
                try:
                    rank, ok, value = results.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"{world_size}-rank job gave no result within {timeout:g} s") from None
                if not ok:
                    raise RuntimeError(f"rank {rank} failed:\n{value}")
                out[rank] = pickle.loads(value)
            return [out[r] for r in range(world_size)]
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():  # a rank stuck in a collective after its peer failed
                    p.kill()
                    p.join()


def _rank_main(fn, rank, world_size, store, threads, args, results) -> None:
    torch.set_num_threads(threads)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    try:
        td.init_process_group(backend_for("cpu"), init_method=f"file://{store}", rank=rank, world_size=world_size)
        # Pickled here, not by the queue: torch's queue pickler would pass tensors as shared-memory
        # handles, which vanish when this process exits before the parent has read them.
        results.put((rank, True, pickle.dumps(fn(*args))))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        if td.is_initialized():
            td.destroy_process_group()
