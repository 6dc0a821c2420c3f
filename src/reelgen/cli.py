"""The `reelgen` command: thin subcommands that parse arguments and call the library."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields


def _add_train(sub) -> None:
    from reelgen.training.loop import TrainConfig

    p = sub.add_parser("train", help="train the built-in model on the procedural world (resumes if a checkpoint exists)",
                       description="Train (or resume) a video transformer on the procedural world of moving shapes. "
                                   "Data-parallel: launch with `torchrun --nproc-per-node N -m reelgen.cli train ...`.")
    defaults = TrainConfig()
    helps = {
        "out_dir": "folder for checkpoint.pt, the EMA weights (ema/) and log.jsonl",
        "preset": "model size preset (test, small, base)",
        "steps": "optimizer steps to reach; a resumed run continues up to this",
        "batch_size": "clips per step per process",
        "lr": "AdamW learning rate after warm-up",
        "warmup_steps": "steps of linear learning-rate warm-up",
        "grad_clip": "maximum gradient norm",
        "ema_decay": "decay of the exponential moving average of weights that is shipped",
        "cond_dropout": "probability of replacing a caption with the empty prompt (for classifier-free guidance)",
        "temporal_weight": "weight of the temporal-consistency loss (frame differences of the predicted clean clip)",
        "color_space": "pixel space the model learns: rgb or lab",
        "precision": "autocast precision: fp32, bf16 or fp16 (bf16 is very slow on CPUs without AVX512-BF16)",
        "gradient_checkpointing": "recompute block activations during backward to save memory",
        "seed": "seed for data, noise, caption dropout and initialization",
        "checkpoint_every": "steps between checkpoints",
        "max_minutes": "checkpoint and stop after this many minutes of wall time",
    }
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.type == "bool" or isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps[f.name])
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], float)
            choices = {"preset": None, "color_space": ["rgb", "lab"], "precision": ["fp32", "bf16", "fp16"]}.get(f.name)
            p.add_argument(flag, type=kind, default=default, choices=choices,
                           help=f"{helps[f.name]} (default: {default})")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from reelgen.training.loop import TrainConfig, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    path = train(cfg)
    print(f"EMA weights: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reelgen", description="Self-hostable AI video generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"reelgen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
