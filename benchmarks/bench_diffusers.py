"""The diffusers backend on small random Wan pipelines: overhead vs plain diffusers, memory options, quantization.

    .venv/bin/python benchmarks/bench_diffusers.py [--repeats 15] [--compile]

1. Overhead: one pipeline object, called directly (what a diffusers user writes) and through
   reelgen's DiffusersGenerator (registry options, progress callback, encoder timing, uint8 frames),
   alternating, same settings and seed. Median wall time and median peak memory of a call (the
   rise of resident memory above its level before the call: VmHWM after /proc/self/clear_refs).
2. Options: each memory/speed option of models.toml, same pipeline and settings: time, peak memory,
   and how far the video moves (PSNR against the plain run; inf = identical).
3. Quantization: transformer weight memory of a Wan2.1-1.3B-wide transformer (width 1536, FFN 8960,
   2 of its 30 blocks) in float32, bfloat16 and each torchao scheme that runs here (quantized from
   bfloat16), and how far each scheme moves the float32 pipeline's video (PSNR) and its time.

Random weights: the figures measure the machinery, not video quality. No download needed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from reelgen.backends.base import GenerationRequest
from reelgen.backends.registry import parse_registry
from reelgen.backends.tiny import TINY_CALL_OPTIONS, tiny_registry_entry, tiny_wan
from reelgen.evaluation.machine import machine_info

SIZE, FRAMES, STEPS = 64, 17, 4
BENCH_TRANSFORMER = {"heads": 4, "head_dim": 32, "ffn_dim": 512, "layers": 4}  # width 128: a call takes ~1 s
WAN_1_3B_WIDTH = {"heads": 12, "head_dim": 128, "ffn_dim": 8960, "layers": 2}
_LIBC = ctypes.CDLL("libc.so.6")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, peak MiB above the resident memory before the call).

    CPU time is the steadier figure on a machine shared with other jobs: it does not count waiting for a core.
    """
    gc.collect()
    _LIBC.malloc_trim(0)  # hand freed heap back first, so every call starts from the same floor
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident set, to the current one
    before = _status_kib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, (_status_kib("VmHWM") - before) / 1024


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def generator_for(path: Path, memory: dict | None = None, size: int = SIZE):
    entry = tiny_registry_entry("wan", path, "bench", limits={"sizes": [f"{size}x{size}"], "max_frames": FRAMES},
                                memory=memory or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int4wo's warning that float32 makes it slow on the CPU: measured here
        generator = parse_registry(entry).generator("bench")
    generator.load()
    return generator


def request(seed: int = 0) -> GenerationRequest:
    # euler: the scheduler the folder ships (FlowMatchEulerDiscreteScheduler), the one the direct call runs
    return GenerationRequest(prompt="a red circle moving left on a black background", frames=FRAMES, steps=STEPS,
                             seed=seed, sampler="euler")


def overhead(path: Path, repeats: int) -> None:
    generator = generator_for(path)
    pipe = generator.pipeline
    req = request()

    def direct():
        frames = pipe(prompt=[req.prompt], negative_prompt=[req.negative_prompt], height=SIZE, width=SIZE,
                      num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=req.guidance_scale,
                      generator=[torch.Generator().manual_seed(req.seed)], output_type="np",
                      **TINY_CALL_OPTIONS["wan"]).frames
        return (frames * 255).round().astype(np.uint8)

    def reelgen():
        return generator.generate([req], on_step=lambda done, total: None).frames

    difference = np.abs(direct().astype(int) - reelgen().astype(int)).max()  # also the warm-up
    assert difference <= 1, f"the two paths must make the same video (max difference {difference})"
    runs = {"diffusers": [], "reelgen": []}
    for i in range(repeats):
        order = (("diffusers", direct), ("reelgen", reelgen))
        for name, fn in order if i % 2 else order[::-1]:  # neither path always runs first
            runs[name].append(measure(fn))
    med = {k: [statistics.median(r[j] for r in v) for j in range(3)] for k, v in runs.items()}
    best = {k: min(r[1] for r in v) for k, v in runs.items()}  # the least disturbed call of each path
    print(f"\n## Overhead vs plain diffusers ({repeats} alternating calls each)\n")
    print("| path | wall time (median) | CPU time (median) | CPU time (best) | peak memory of a call (median) |")
    print("| --- | --- | --- | --- | --- |")
    for k, (wall, cpu, mib) in med.items():
        print(f"| {k} | {wall * 1000:.1f} ms | {cpu * 1000:.1f} ms | {best[k] * 1000:.1f} ms | {mib:.1f} MiB |")

    cpu0 = med["diffusers"][1]
    # reelgen's own work, apart from the pipeline: the same generate() around a stand-in pipeline that returns
    # the real call's frames at once and runs the step callback as often. Steady where A/B timing is noisy.
    real_frames = pipe(prompt=[req.prompt], height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                       output_type="np", **TINY_CALL_OPTIONS["wan"]).frames

    class StandIn:
        def __call__(self, callback_on_step_end=None, **kwargs):
            for i in range(STEPS):
                callback_on_step_end(self, i, None, {})
            return SimpleNamespace(frames=real_frames.copy())

    stand_in = StandIn()
    generator.pipeline = stand_in
    own = statistics.median(measure(reelgen)[1] - measure(lambda: stand_in(lambda *a: a[-1]))[1]
                            for _ in range(repeats))
    generator.pipeline = pipe
    print(f"\nreelgen's own work per call (validation, generators, progress and cancel checks, uint8 frames): "
          f"{own * 1000:.2f} ms = {100 * own / cpu0:.2f}% of the pipeline's median CPU time")

    def change(key, a, b):
        return f"{key} {100 * (b / a - 1):+.1f}%"

    (wall0, cpu0, mib0), (wall1, cpu1, mib1) = med["diffusers"], med["reelgen"]
    print(f"\nreelgen vs diffusers: {change('best CPU time', best['diffusers'], best['reelgen'])}, "
          f"{change('median CPU time', cpu0, cpu1)}, {change('median wall time', wall0, wall1)} (target <= 3%); "
          f"{change('peak memory', mib0, mib1)} (target <= 5%)")


OPTIONS = {
    "none": {},
    "vae_slicing": {"vae_slicing": True},
    "vae_tiling": {"vae_tiling": True},
    "attention _native_math": {"attention_backend": "_native_math"},
    "first_block_cache (0.05)": {"step_cache": "first_block_cache"},
    "first_block_cache (0.2)": {"step_cache": "first_block_cache", "step_cache_options": {"threshold": 0.2}},
    "pyramid_attention_broadcast": {"step_cache": "pyramid_attention_broadcast"},
    "int8wo": {"quantization": "int8wo"},
    "int8dq": {"quantization": "int8dq"},
    "fp8wo": {"quantization": "fp8wo"},
    "int4wo": {"quantization": "int4wo"},
}


def options(path: Path, repeats: int, compile_too: bool, only: list[str] | None) -> None:
    chosen = OPTIONS | ({"torch_compile": {"torch_compile": True}} if compile_too else {})
    print(f"\n## Memory and speed options ({SIZE}x{SIZE}, {FRAMES} frames, {STEPS} steps; medians of {repeats})\n")
    print("| option | load + first call (wall / CPU) | wall time per call | CPU time per call | peak memory of a "
          "call | PSNR vs none |")
    print("| --- | --- | --- | --- | --- | --- |")
    references = {}
    # The VAE tiles only frames larger than its tile (256 px for Wan): the last two rows are 320x320 (3 calls each).
    rows = [(name, memory, SIZE) for name, memory in chosen.items()] + \
        [("none, 320x320", {}, 320), ("vae_tiling, 320x320", {"vae_tiling": True}, 320)]
    if only:  # the chosen rows, after the reference each is compared with
        rows = [row for row in rows if row[0] == "none" or row[0] in only]
    for name, memory, size in rows:
        start, start_cpu = time.perf_counter(), time.process_time()
        generator = generator_for(path, memory, size)
        frames = generator.generate([request()]).frames
        first, first_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        runs = [measure(lambda: generator.generate([request()])) for _ in range(repeats if size == SIZE else 3)]
        reference = references.setdefault(size, frames)
        print(f"| {name} | {first:.2f} s / {first_cpu:.2f} s | {statistics.median(r[0] for r in runs) * 1000:.1f} ms | "
              f"{statistics.median(r[1] for r in runs) * 1000:.1f} ms | {statistics.median(r[2] for r in runs):.1f} "
              f"MiB | {psnr(frames, reference):.1f} dB |")
    print("\nOffloading (cpu_offload, sequential_offload) and fp8 need a GPU: not measurable here.")


def quantization(tmp: Path, repeats: int) -> None:
    import torchao.quantization as tq
    from diffusers import WanTransformer3DModel

    from reelgen.backends.memory import QUANTIZATIONS, torchao_config, weight_bytes

    path = tmp / "wan-1.3b-width"
    tiny_wan(**WAN_1_3B_WIDTH).save_pretrained(path)

    def transformer(dtype):  # loaded as a user loads it: norms and embedders the model keeps in float32 stay so
        return WanTransformer3DModel.from_pretrained(path / "transformer", dtype=dtype)

    def video(memory):  # the float32 pipeline on the CPU -> (frames, median CPU seconds per call)
        generator = generator_for(path, memory)
        frames = generator.generate([request()]).frames
        return frames, statistics.median(measure(lambda: generator.generate([request()]))[1] for _ in range(repeats))

    base = {dtype: weight_bytes(transformer(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    reference, reference_seconds = video({})
    print(f"\n## Quantization at Wan2.1-1.3B width (1536, FFN 8960; 2 of its 30 blocks), {SIZE}x{SIZE}, {FRAMES} "
          f"frames, {STEPS} steps, medians of {repeats}\n")
    print("| transformer weights | MiB | vs float32 | vs bfloat16 | PSNR of the video vs float32 | "
          "CPU time per call |")
    print("| --- | --- | --- | --- | --- | --- |")

    def row(name: str, b: int, quality: str, seconds: float | None) -> None:
        print(f"| {name} | {b / 2**20:.1f} | {100 * (b / base[torch.float32] - 1):+.0f}% | "
              f"{100 * (b / base[torch.bfloat16] - 1):+.0f}% | {quality} | "
              f"{'' if seconds is None else f'{seconds:.2f} s'} |")

    row("float32", base[torch.float32], "reference", reference_seconds)
    row("bfloat16 (norms and embedders stay float32)", base[torch.bfloat16], "not run (bfloat16 is slow here)", None)
    for name in QUANTIZATIONS:
        model = transformer(torch.bfloat16)
        try:
            tq.quantize_(model, torchao_config(name, "cpu"))
            frames, seconds = video({"quantization": name})
        except Exception as e:  # a scheme that needs a GPU: torchao or the registry refuses it
            print(f"| {name} | not available here: {type(e).__name__}: {str(e)[:100]} | | | | |")
            continue
        row(f"{name} (from bfloat16; the video from float32)", weight_bytes(model), f"{psnr(frames, reference):.1f} dB",
            seconds)
    print("\ntargets: int8 weight-only <= -45% vs bfloat16 and <= -70% vs float32; a 4-bit scheme <= -70% vs "
          "bfloat16. int4wo on the CPU is torchao's Int4OpaqueTensor (two 4-bit weights a byte, one scale and zero "
          "per group of 128).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per path or option (default: 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; tiny models run "
                                                                "fastest on one, and steadier beside other jobs)")
    parser.add_argument("--compile", action="store_true", help="also time torch_compile (compiling takes minutes)")
    parser.add_argument("--only", choices=["overhead", "options", "quantization"], help="run one section")
    parser.add_argument("--option", action="append", help="a row of the options table to run (repeatable; "
                                                          "default: all; 'none' always runs as the reference)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m = machine_info()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}; "
          f"load average {os.getloadavg()[0]:.1f} at the start (other jobs on the cores slow wall times)")
    print(f"pipeline: random WanPipeline, transformer {BENCH_TRANSFORMER}, float32 on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wan"
        if args.only != "quantization":
            tiny_wan(**BENCH_TRANSFORMER).save_pretrained(path)
        if args.only in (None, "overhead"):
            overhead(path, args.repeats)
        if args.only in (None, "options"):
            options(path, args.repeats, args.compile, args.option)
        if args.only in (None, "quantization"):
            quantization(Path(tmp), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
