"""Draw the training loss curve of a run from its log.jsonl, or of a run in phases from one log per phase.

    .venv/bin/python benchmarks/plot_loss.py checkpoints/framewise/log.jsonl checkpoints/builtin/log.jsonl docs/loss.png

A later phase (a run started with --init-from) counts its steps on from the end of the one before;
a dashed line marks where it starts.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def read_log(path: str) -> dict[int, dict]:
    # A resumed run re-logs the steps after its last checkpoint: keep the latest row per step.
    return {r["step"]: r for r in map(json.loads, open(path))}


def main(log_paths: list[str], out_path: str) -> None:
    by_step: dict[int, dict] = {}
    starts = []  # the first step of each later phase
    for path in log_paths:
        offset = max(by_step, default=0)
        if offset:
            starts.append(offset)
        by_step.update({offset + step: row for step, row in read_log(path).items()})
    steps = np.array(sorted(by_step))
    window = max(1, len(steps) // 50)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key, label in (("loss", "total"), ("diffusion", "v-prediction MSE"), ("temporal", "temporal term")):
        values = np.array([by_step[s][key] for s in steps])
        ax.plot(steps[window - 1:], smooth(values, window), label=label)
    for start in starts:
        ax.axvline(start, color="gray", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step (batch 16 clips)" + ("; dashed: next phase starts" if starts else ""))
    ax.set_ylabel(f"loss (moving average of {window} steps)")
    ax.set_title("reelgen built-in model: training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"{out_path}: {len(steps)} steps, last loss {by_step[steps[-1]]['loss']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: plot_loss.py LOG [LOG ...] OUT.png")
    main(sys.argv[1:-1], sys.argv[-1])
