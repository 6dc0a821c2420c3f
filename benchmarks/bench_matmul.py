"""Matmul throughput per dtype on this CPU: decides whether autocast precisions pay off here.

    .venv/bin/python benchmarks/bench_matmul.py [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch


def gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}x{args.size} matmul")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        print(f"{str(dtype).removeprefix('torch.'):<9} {gflops(dtype, args.size, args.repeats):8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
