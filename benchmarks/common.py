"""What every model benchmark starts with: a --model-dir argument, a check that it holds a model, the machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reelgen.evaluation.machine import machine_info
from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR


def model_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: built-in)")
    return parser


def begin(args: argparse.Namespace) -> None:
    """Exit with a clear message when there is no model; otherwise print the machine line."""
    if not (args.model_dir / "config.json").is_file():
        sys.exit(f"no model in {args.model_dir}; pass --model-dir, e.g. runs/builtin/ema from `reelgen train`")
    m = machine_info()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}")
