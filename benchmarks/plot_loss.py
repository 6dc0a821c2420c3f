"""Draw the training loss curve of a run from its log.jsonl.

    .venv/bin/python benchmarks/plot_loss.py checkpoints/builtin/log.jsonl docs/loss.png
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


def main(log_path: str, out_path: str) -> None:
    rows = [json.loads(line) for line in open(log_path)]
    # A resumed run re-logs the steps after its last checkpoint: keep the latest row per step.
    by_step = {r["step"]: r for r in rows}
    steps = np.array(sorted(by_step))
    window = max(1, len(steps) // 50)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key, label in (("loss", "total"), ("diffusion", "v-prediction MSE"), ("temporal", "temporal term")):
        values = np.array([by_step[s][key] for s in steps])
        ax.plot(steps[window - 1:], smooth(values, window), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step (batch 16 clips)")
    ax.set_ylabel(f"loss (moving average of {window} steps)")
    ax.set_title("reelgen built-in model: training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"{out_path}: {len(steps)} steps, last loss {by_step[steps[-1]]['loss']:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
