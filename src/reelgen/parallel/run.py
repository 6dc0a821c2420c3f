"""Generate one video over several processes: the torchrun entry point.

    torchrun --nproc-per-node 2 -m reelgen.parallel.run "a red circle moving left" --cfg 2 -o out.mp4
    torchrun --nproc-per-node 2 -m reelgen.parallel.run "a red circle moving left" --sequence 2
    torchrun --nproc-per-node 4 -m reelgen.parallel.run "a red circle moving left" --cfg 2 --sequence 2
    torchrun --nproc-per-node 2 -m reelgen.parallel.run "a red circle moving left" --frames 48 --windows
    torchrun --nproc-per-node 2 -m reelgen.parallel.run "a cat runs" --model-path DIR --ulysses 2

A diffusers pipeline (--model-path, or --model with --models-file) runs through diffusers' own context
parallelism (parallel.diffusers_cp): --ulysses N or --ring N ranks share each transformer forward.

torchrun sets RANK, WORLD_SIZE and the rendezvous address; training.distributed
.setup() joins the group (gloo on CPU, nccl on GPU; --device cuda gives each rank
cuda:LOCAL_RANK). Every rank runs the same denoising loop on the same latents and
gets the same frames; rank 0 writes the file. More frames than the model's native
length are generated as blended windows (pipelines.long_video); --windows spreads
those windows over the ranks instead of splitting each forward.

Without torchrun, --ray ADDRESS starts the ranks as a group of Ray actors on that
cluster (parallel.ray_ranks) and this process writes what rank 0 returns:

    python -m reelgen.parallel.run "a red circle moving left" --cfg 2 --ray auto -o out.mp4
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.distributed as td

from reelgen.parallel.mesh import parallelize
from reelgen.pipelines.long_video import DEFAULT_MAX_WINDOWS, LongVideoPipeline
from reelgen.pipelines.request import GenerationRequest


def load_pipeline(model_dir, device: str | torch.device, overlap: int | None = None) -> LongVideoPipeline:
    """The built-in model on `device`, for any number of frames (beyond the native length: blended windows)."""
    from reelgen.models.text_encoder import TextEncoder
    from reelgen.models.transformer import VideoTransformer

    return LongVideoPipeline(VideoTransformer.from_pretrained(model_dir, device=device), TextEncoder(),
                             overlap=overlap)


def spread(pipeline: LongVideoPipeline, *, cfg: int = 1, sequence: int = 1,
           windows: bool = False) -> LongVideoPipeline:
    """Spread `pipeline` over the ranks of the default group, in place: every rank then gets the same frames.

    Either cfg x sequence parallelism within each forward, or (windows=True)
    the long video's windows shared out between the ranks.
    """
    if windows:
        if (cfg, sequence) != (1, 1):
            raise ValueError("--windows spreads whole windows over the ranks: use it without --cfg and --sequence")
        pipeline.group = td.group.WORLD if td.is_initialized() else None
        return pipeline
    return parallelize(pipeline, cfg=cfg, sequence=sequence)


def build_parser() -> argparse.ArgumentParser:
    from reelgen.cli import add_sampling_args  # the same sampling options as `reelgen generate`

    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m reelgen.parallel.run",
                                description="Generate one video over the N processes of a torchrun job, or (--ray) "
                                            "of a group of Ray actors.")
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("-o", "--output", default="out.mp4", help="output file or folder, written by rank 0 "
                                                             "(default: out.mp4)")
    add_sampling_args(p)
    p.add_argument("--negative-prompt", default="", help="replaces the empty prompt in guidance")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to generate; beyond the model's native length, overlapping windows are blended "
                        "(default: the native length)")
    p.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows "
                                                             "(default: half the native length)")
    p.add_argument("--cfg", type=int, default=1, choices=(1, 2), help="ranks sharing the two passes of guidance")
    p.add_argument("--sequence", type=int, default=1, help="ranks sharing the frames of each forward pass")
    p.add_argument("--windows", action="store_true", help="spread long-video windows over the ranks instead")
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank (default: torch's choice; "
                                                             "use cores / ranks on a CPU); with --ray also the "
                                                             "CPUs each rank reserves (default 1)")
    p.add_argument("--ray", metavar="ADDRESS", help="start the ranks as Ray actors on this cluster (auto, or "
                                                    "HOST:PORT of its head) instead of under torchrun")
    p.add_argument("--ranks", type=int, default=2, help="with --ray --windows: actors sharing the windows "
                                                        "(default: 2)")
    p.add_argument("--ulysses", type=int, default=1, help="diffusers models: ranks sharing each transformer "
                                                          "forward with Ulysses attention (diffusers' own)")
    p.add_argument("--ring", type=int, default=1, help="diffusers models: ranks sharing each transformer forward "
                                                       "with ring attention (needs a GPU attention backend)")
    p.add_argument("--fps", type=int, default=None, help="frames per second of the written video (default: 8, or "
                                                         "the open model's native rate)")
    p.add_argument("--min-side", type=int, default=None, help="upscale until the short side has this many pixels "
                                                              "(default: 256; an open model's video keeps its size)")
    from reelgen.backends.cli_options import add_model_args

    add_model_args(p)
    p.set_defaults(steps=None, guidance=None, sampler=None)  # None: the built-in model's or the open model's own
    return p


def main(argv: list[str] | None = None) -> int:
    from reelgen.models.transformer import load_config
    from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR
    from reelgen.rendering.video import check_output_path, write_video
    from reelgen.training.distributed import setup

    from reelgen.backends.cli_options import fill_builtin_defaults, uses_open_model

    args = build_parser().parse_args(argv)
    if uses_open_model(args):
        return run_diffusers(args)
    if (args.ulysses, args.ring) != (1, 1):
        raise ValueError("--ulysses and --ring split diffusers models (--model-path); the built-in model splits "
                         "with --sequence and --cfg")
    fill_builtin_defaults(args, local_device=args.ray is None)  # with --ray the ranks check their nodes' devices
    # 1. check everything before any model loads on any rank
    model_dir = args.model_dir or DEFAULT_MODEL_DIR
    native = load_config(model_dir).frames
    request = GenerationRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                                frames=args.frames or native, steps=args.steps, guidance_scale=args.guidance,
                                sampler=args.sampler)
    request.check(DEFAULT_MAX_WINDOWS * native)
    output, _ = check_output_path(args.output)
    if args.ray is not None:
        return run_on_ray(args, model_dir, request, output)

    # 2. join the job, load, generate; rank 0 writes
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
        pipeline = spread(load_pipeline(model_dir, dist.device, args.overlap), cfg=args.cfg, sequence=args.sequence,
                          windows=args.windows)
        frames = pipeline([request], progress=dist.is_main)[0]
        if dist.is_main:
            write_video(frames, output, fps=args.fps, min_side=args.min_side)
            print(f"wrote {output} ({frames.shape[0]} frames on {dist.world_size} ranks)")
    finally:
        dist.teardown()
    return 0


def run_on_ray(args: argparse.Namespace, model_dir, request: GenerationRequest, output) -> int:
    """The ranks as a group of Ray actors on the cluster at --ray; this process writes what rank 0 returns."""
    import os

    import ray

    from reelgen.parallel.ray_ranks import RayRankGroup
    from reelgen.rendering.video import write_video

    if "RANK" in os.environ:
        raise ValueError("--ray starts its own ranks: run it with python, not under torchrun")
    if args.ranks < 1:
        raise ValueError(f"--ranks must be >= 1, got {args.ranks}")
    ray.init(address=args.ray, log_to_driver=False)
    try:
        with RayRankGroup(model_dir, cfg=args.cfg, sequence=args.sequence, windows=args.ranks if args.windows else 0,
                          overlap=args.overlap, device=args.device, num_cpus=args.threads or 1) as group:
            frames = group(request)
    finally:
        ray.shutdown()
    write_video(frames, output, fps=args.fps, min_side=args.min_side)
    print(f"wrote {output} ({frames.shape[0]} frames on {group.world_size} Ray ranks over {len(set(group.nodes))} "
          "node(s))")
    return 0


def run_diffusers(args: argparse.Namespace) -> int:
    """A diffusers pipeline over the job's ranks with diffusers' context parallelism; rank 0 writes the video."""
    import os

    from reelgen.backends.base import GenerationRequest as OpenRequest
    from reelgen.backends.cli_options import model_config
    from reelgen.backends.diffusers import DiffusersGenerator, ModelLoadError
    from reelgen.backends.model_table import parse_size
    from reelgen.parallel.diffusers_cp import Layout, check_size, enable_context_parallel
    from reelgen.rendering.video import check_output_path, write_video
    from reelgen.training.distributed import setup

    # 1. check everything the flags say before any weights load on any rank
    if (args.cfg, args.sequence, args.windows, args.overlap) != (1, 1, False, None):
        raise ValueError("--cfg, --sequence, --windows and --overlap split the built-in model; a diffusers model "
                         "splits with --ulysses or --ring")
    if args.ray is not None:
        raise ValueError("--ray: Ray rank groups run the built-in model; launch a diffusers model's ranks with "
                         "torchrun")
    layout = Layout(ulysses=args.ulysses, ring=args.ring)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if layout.ranks != world:
        raise ValueError(f"ulysses {layout.ulysses} x ring {layout.ring} needs {layout.ranks} ranks, the job has "
                         f"{world}")
    if torch.cuda.is_available() and args.device in (None, "cuda"):
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per rank
    config, _, _ = model_config(args)
    spec = config.spec
    request = OpenRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                          frames=spec.frames_for(spec.default_seconds) if args.frames is None else args.frames,
                          steps=spec.default_steps if args.steps is None else args.steps,
                          guidance_scale=spec.default_guidance_scale if args.guidance is None else args.guidance,
                          sampler=args.sampler or spec.default_sampler,
                          size=None if args.size is None else parse_size(args.size))
    fps = spec.fps if args.fps is None else args.fps
    output, _ = check_output_path(args.output)
    generator = DiffusersGenerator(config)
    (width, height), _ = generator.check([request])

    # 2. join the job, load, split the transformer (checked again on the loaded model), generate; rank 0 writes
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = setup(config.device)
    try:
        try:
            generator.load()
        except ModelLoadError as e:
            raise ValueError(str(e)) from e
        if layout.ranks > 1:
            enable_context_parallel(generator.pipeline, layout)
            check_size(generator.pipeline, layout, request.frames, height, width)
        video = generator.generate([request]).frames[0]
        if dist.is_main:
            write_video(video, output, fps=fps, min_side=args.min_side or min(video.shape[1:3]))
            print(f"wrote {output} ({video.shape[0]} frames of {width}x{height} on {dist.world_size} ranks, "
                  f"ulysses {layout.ulysses} x ring {layout.ring})")
    finally:
        dist.teardown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:  # bad settings: one clear line per rank, not a traceback
        print(f"reelgen.parallel.run: error: {e}", file=sys.stderr)
        sys.exit(2)
