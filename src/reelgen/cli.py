"""The `reelgen` command: thin subcommands that parse arguments and call the library."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import fields


def _add_train(sub) -> None:
    from reelgen.training.loop import TrainConfig

    p = sub.add_parser("train", help="train the built-in model on the procedural world (resumes if a checkpoint exists)",
                       description="Train (or resume) a video transformer on the procedural world of moving shapes. "
                                   "Data-parallel: launch with `torchrun --nproc-per-node N -m reelgen.cli train ...`.")
    defaults = TrainConfig()
    helps = {
        "out_dir": "folder for checkpoint.pt, the EMA weights (ema/) and log.jsonl",
        "preset": "model preset: test, small (the built-in model), small-framewise (its first phase), base",
        "steps": "optimizer steps to reach; a resumed run continues up to this",
        "batch_size": "clips per step per process",
        "lr": "AdamW learning rate after warm-up",
        "warmup_steps": "steps of linear learning-rate warm-up",
        "grad_clip": "maximum gradient norm",
        "ema_decay": "decay of the exponential moving average of weights that is shipped",
        "cond_dropout": "probability of replacing a caption with the empty prompt (for classifier-free guidance)",
        "temporal_weight": "weight of the temporal-consistency loss (frame differences of the predicted clean clip)",
        "timestep_shift": "above 1, draw noisier training timesteps more often (SD3 shift; 1 = uniform)",
        "color_space": "pixel space the model learns: rgb or lab",
        "precision": "autocast precision: fp32, bf16 or fp16 (bf16 is very slow on CPUs without AVX512-BF16)",
        "gradient_checkpointing": "recompute block activations during backward to save memory",
        "seed": "seed for data, noise, caption dropout and initialization",
        "init_from": "a model folder whose weights start a new run instead of random ones; weights with fewer "
                     "frames per patch are inflated to the preset's (ignored when resuming)",
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


def add_sampling_args(p) -> None:
    """Options shared by every command that samples from a model."""
    from reelgen.pipelines.request import DEFAULT_SAMPLER, GUIDANCE_WARN_ABOVE, MAX_STEPS, SAMPLER_NAMES

    p.add_argument("--model-dir", default=None, help="a reelgen model folder (config.json + model.safetensors); "
                                                     "default: the built-in model")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed and settings give the same video "
                                                       "bit for bit (default: 0)")
    p.add_argument("--steps", type=int, default=20, help=f"denoising steps, 1-{MAX_STEPS} (default: 20)")
    p.add_argument("--guidance", type=float, default=5.0,
                   help=f"classifier-free guidance scale, >= 0; 1 disables guidance, above {GUIDANCE_WARN_ABOVE:g} "
                        "warns (default: 5.0)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES,
                   help=f"diffusers scheduler used for sampling (default: {DEFAULT_SAMPLER})")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a video from a text prompt",
                       description="Generate a video from a text prompt with the built-in model (or --model-dir), or "
                                   "with an open diffusers model (--model, --model-path), from a first frame too "
                                   "(--image). "
                                   "The output format follows the extension of -o: .mp4 (H.264), .webm (VP9), "
                                   ".gif, or a folder of PNG frames (a path without an extension).")
    p.add_argument("prompt", help="what the video shows, e.g. 'a red circle moving to the left on a black background'")
    p.add_argument("-o", "--output", default="out.mp4", help="output file or folder (default: out.mp4)")
    add_sampling_args(p)
    p.add_argument("--negative-prompt", default="", help="what the video should not show (replaces the empty prompt "
                                                         "in guidance)")
    p.add_argument("--frames", type=int, default=None, help="number of frames, 2 up to the model's native length "
                                                           "(default: the native length, 16 for the built-in model)")
    p.add_argument("--fps", type=int, default=None, help="frames per second of the written video, 1-120 (default: 8, "
                                                         "or the open model's native rate)")
    p.add_argument("--min-side", type=int, default=None, help="upscale (nearest neighbour) until the short side is at "
                                                            "least this many pixels (default: 256; an open model's video keeps "
                                                            "its generated size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from reelgen.backends.cli_options import add_model_args

    add_model_args(p)
    # None: the built-in model's defaults, or an open model's own (reelgen.backends.cli_options)
    p.set_defaults(func=_run_generate, steps=None, guidance=None, sampler=None)


def _run_generate(args) -> int:
    from reelgen.models.transformer import load_config
    from reelgen.pipelines.request import GenerationRequest
    from reelgen.pipelines.text_to_video import DEFAULT_MODEL_DIR, TextToVideoPipeline
    from reelgen.rendering.video import check_output_path, write_video

    from reelgen.backends.cli_options import fill_builtin_defaults, run_generate, uses_open_model

    if uses_open_model(args):
        return run_generate(args)
    # 1. check everything before the model loads, so bad input costs nothing and writes nothing
    fill_builtin_defaults(args)
    model_dir = args.model_dir or DEFAULT_MODEL_DIR
    native_frames = load_config(model_dir).frames
    frames = native_frames if args.frames is None else args.frames
    request = GenerationRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                                frames=frames, steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler)
    request.check(native_frames)
    if not 1 <= args.fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {args.fps}")
    if not 1 <= args.min_side <= 4096:
        raise ValueError(f"min-side must be between 1 and 4096, got {args.min_side}")
    output, _ = check_output_path(args.output)

    # 2. generate and write (the writer replaces the file only once it is complete)
    pipeline = TextToVideoPipeline.from_pretrained(model_dir, device=args.device)
    frames = pipeline([request], progress=not args.quiet)[0]
    write_video(frames, output, fps=args.fps, min_side=args.min_side)
    print(f"wrote {output} ({frames.shape[0]} frames, {args.fps} fps)")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the video service: OpenAI-compatible API, job store, workers, storage",
                       description="Serve the OpenAI-compatible video API with workers in this process, jobs in "
                                   "SQLite (or any SQLAlchemy URL) and files in a folder (or any fsspec URL). "
                                   "With --workers 0 this process only answers the API and `reelgen worker` "
                                   "processes sharing the same stores generate.",
                       epilog="Every setting can also come from an environment variable REELGEN_<NAME>, e.g. "
                              "REELGEN_WORKERS=2. Secrets come only from there, out of the process list: "
                              "REELGEN_API_KEYS='[\"key1\"]' adds keys to those of `reelgen keys`, and "
                              "REELGEN_SIGNING_SECRET keeps "
                              "signed links valid across restarts; REELGEN_WEBHOOK_SECRET (whsec_...) signs webhooks.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    _add_settings_args(p)
    p.set_defaults(func=_run_serve)


def _add_settings_args(p) -> None:
    """--log-level and one flag per ServiceSettings field: the same for `serve` and `worker`."""
    from reelgen.service.settings import ServiceSettings

    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: info)")
    for name, field in ServiceSettings.model_fields.items():
        if name in ("api_keys", "signing_secret", "webhook_secret"):
            continue
        default = "" if field.default in (None, "") else f" (default: {field.default})"
        p.add_argument("--" + name.replace("_", "-"), type={int: int, float: float}.get(field.annotation, str),
                       default=None, help=(field.description + default).replace("%", "%%"))  # argparse formats help


def _settings(args):
    """ServiceSettings from the flags over the REELGEN_* environment; a bad value is one line naming both."""
    from pydantic import ValidationError

    from reelgen.service.settings import ServiceSettings

    try:
        return ServiceSettings(**{name: getattr(args, name) for name in ServiceSettings.model_fields
                                  if getattr(args, name, None) is not None})
    except ValidationError as e:
        raise ValueError("; ".join(map(_setting_problem, e.errors()))) from None


def _setting_problem(error: dict) -> str:
    if not error["loc"]:
        return error["msg"]
    flag = "--" + ".".join(map(str, error["loc"])).replace("_", "-")
    return f"{flag} (or REELGEN_{str(error['loc'][0]).upper()}): {error['msg']}, got {error.get('input')!r}"


def _run_serve(args) -> int:
    import uvicorn

    from reelgen.service import logs
    from reelgen.service.app import create_app

    settings = _settings(args)
    # Worker threads denoise beside the API in this process. At Python's default 5 ms switch interval, a request
    # handler holding the GIL stalls each torch op of the denoise loop that wants it back, and the reverse: 0.2 ms
    # took a job's platform overhead from 948 to 128 ms and GET p99 from 124 to 12 ms (benchmarks/bench_service.py).
    sys.setswitchinterval(0.0002)
    logs.configure(args.log_level, settings.log_format)
    _check_auth(settings, args.host)
    # Open event streams get a few seconds on SIGTERM; then the app's shutdown finishes or re-queues running jobs.
    # log_config=None: uvicorn's own loggers go through the handler above, in the same format.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5, log_config=None)
    return 0


def _check_auth(settings, host: str) -> None:
    """Auth is off while no API key exists: allowed only where nobody else can connect (loopback)."""
    from reelgen.service.tenants import KeyStore, is_loopback

    with _job_store(settings.database_url) as store:
        keys = KeyStore(store.engine)
        keys.register_configured(settings.api_keys)
        if not keys.auth_required() and not is_loopback(host):
            raise ValueError(f"refusing to serve on {host} without API keys: anyone reaching it could use it. "
                             "Create one with `reelgen keys create` (or listen on 127.0.0.1)")


@contextmanager
def _job_store(url: str):
    """The job store at `url`, migrated; an unreachable database is one message (exit 2)."""
    from sqlalchemy.exc import OperationalError

    from reelgen.service.jobs import JobStore

    store = JobStore(url)
    try:
        store.create_schema()
        yield store
    except OperationalError as e:
        raise OSError(f"cannot reach the database {store.engine.url}: {e.orig}") from e
    finally:
        store.close()


def _add_keys(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=None,
                        help="the job store's SQLAlchemy URL (default: REELGEN_DATABASE_URL, else SQLite in "
                             "REELGEN_DATA_DIR, as `reelgen serve`)")
    p = sub.add_parser("keys", help="API keys of the service: create, list, revoke",
                       description="API keys live in the job store: every `reelgen serve` on it accepts a new key, "
                                   "and refuses a revoked one, at its next request. Once any key exists, every "
                                   "request needs one (`Authorization: Bearer rg_...`); before that, auth is off, "
                                   "which `serve` allows on loopback only.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="make a key and print its secret (once)",
                                description="Prints the secret alone on stdout; it is stored only as a hash "
                                            "and cannot be shown again. Limits not given follow the service's "
                                            "settings (REELGEN_REQUESTS_PER_MINUTE, ...); 0 is no limit.")
    create.add_argument("--name", default="", help="what the key is for (shown by `list`)")
    create.add_argument("--requests-per-minute", type=int, default=None, help="requests per minute")
    create.add_argument("--max-concurrent-jobs", type=int, default=None, help="videos queued or in progress")
    create.add_argument("--daily-compute-seconds", type=float, default=None,
                        help="device seconds of generation per UTC day")
    create.add_argument("--webhook-url", default=None,
                        help="receives the events of this key's videos when a request names no webhook_url "
                             "(the service needs REELGEN_WEBHOOK_SECRET)")
    actions.add_parser("list", parents=[common], help="every key: id, name, status, limits")
    revoke = actions.add_parser("revoke", parents=[common], help="refuse a key from its next request on")
    revoke.add_argument("id", help="the key's id, key_... (from `list`)")
    p.set_defaults(func=_run_keys)


def _run_keys(args) -> int:
    from reelgen.service.settings import ServiceSettings
    from reelgen.service.tenants import KeyStore, check_limits

    with _job_store(args.database_url or ServiceSettings().database_url) as store:
        keys = KeyStore(store.engine)
        if args.action == "create":
            limits = {name: getattr(args, name) for name in ("requests_per_minute", "max_concurrent_jobs",
                                                             "daily_compute_seconds", "webhook_url")}
            key, secret = keys.create(args.name, **check_limits(**limits))
            print(secret)
            print(f"created {key.id}{f' ({key.name})' if key.name else ''}: the secret above is shown only "
                  "this once", file=sys.stderr)
        elif args.action == "list":
            for key in keys.list():
                print(_key_line(key))
        else:
            key = keys.revoke(args.id)
            if key is None:
                raise ValueError(f"no API key has the id '{args.id}' (see `reelgen keys list`)")
            print(f"revoked {key.id}{f' ({key.name})' if key.name else ''}")
    return 0


def _key_line(key) -> str:
    from datetime import datetime, timezone

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def limit(value) -> str:
        return "default" if value is None else "none" if value == 0 else f"{value:g}"

    status = f"revoked {when(key.revoked_at)}" if key.revoked_at is not None else "active"
    return (f"{key.id}  {key.name or '-'}  {key.hint or '-'}...  created {when(key.created_at)}  {status}  "
            f"rpm {limit(key.requests_per_minute)}, concurrent {limit(key.max_concurrent_jobs)}, "
            f"compute s/day {limit(key.daily_compute_seconds)}"
            + (f"  webhook {key.webhook_url}" if key.webhook_url else ""))


def _add_worker(sub) -> None:
    p = sub.add_parser("worker", help="run only the generation side of the service, beside `serve --workers 0`",
                       description="Claim and generate the jobs of a `reelgen serve --workers 0` sharing the same "
                                   "job store and object store (give both the same settings). Any number of "
                                   "workers, on any machines that reach both stores; SIGTERM stops claiming and "
                                   "gives running jobs --shutdown-grace-seconds to finish before re-queueing them.",
                       epilog="Every setting can also come from an environment variable REELGEN_<NAME>, e.g. "
                              "REELGEN_WORKERS=2; settings of the API (keys, webhooks, links) are not used here.")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve this worker's Prometheus metrics (stage timings, utilization) on this port at "
                        "/metrics (default: none)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics server (default: 127.0.0.1, this machine only)")
    _add_settings_args(p)
    p.set_defaults(func=_run_worker)


def _run_worker(args) -> int:
    import signal
    import threading

    from reelgen.service import logs
    from reelgen.service.worker import Worker

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ValueError(f"--metrics-port must be between 0 and 65535, got {args.metrics_port}")
    settings = _settings(args)
    logs.configure(args.log_level, settings.log_format)
    worker = Worker(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.run(stop, None if args.metrics_port is None else (args.metrics_host, args.metrics_port))
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="measure prompt adherence, temporal quality, speed and memory",
                       description="Generate clips for held-out prompts and held-out attribute combinations, read "
                                   "them back with an oracle that sees only the frames, and write eval.json and "
                                   "eval.md (a Markdown table) to the output folder.")
    p.add_argument("-o", "--out-dir", default="eval", help="folder for eval.json and eval.md (default: eval)")
    p.add_argument("-n", "--n-per-split", type=int, default=32,
                   help="clips per split (held-out phrasings; held-out combinations) (default: 32)")
    add_sampling_args(p)  # the prompts are fixed; --seed varies only the sampling noise
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from reelgen.evaluation.runner import markdown, run_eval
    from reelgen.pipelines.text_to_video import TextToVideoPipeline

    if args.n_per_split < 1:
        raise ValueError(f"n-per-split must be at least 1, got {args.n_per_split}")
    pipeline = TextToVideoPipeline.from_pretrained(args.model_dir)
    results = run_eval(pipeline, out_dir=args.out_dir, n_per_split=args.n_per_split, steps=args.steps,
                       guidance_scale=args.guidance, sampler=args.sampler, seed=args.seed, progress=True)
    print(markdown(results))
    return 0


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="how many replicas of which size a steady load needs",
                       description="Capacity plan from measured per-stage timings: the fewest replicas (M/M/c "
                                   "queue, with a utilization cap) that keep the chosen latency percentile "
                                   "within the target, per replica size. See docs/scaling.md.")
    p.add_argument("--rate", required=True, help="arrival rate, e.g. 200/min, 3/s, 1000/hour")
    p.add_argument("--target-latency", required=True, help="submission to finished video, e.g. 60s, 2min")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--timings", metavar="FILE",
                     help="JSON with one job's {stage: seconds}, a video object, or the list object of "
                          "GET /v1/videos (the mean of its completed videos)")
    src.add_argument("--database-url", help="a job store's SQLAlchemy URL: the mean timings of its most recent "
                                            "completed jobs (e.g. sqlite:///reelgen-data/jobs.db)")
    src.add_argument("--seconds-per-job", type=float,
                     help="one number instead of stage timings (all of it taken as denoising)")
    p.add_argument("--devices", default="1", help="replica sizes to compare, devices per replica, e.g. 1,2,4,8 "
                                                 "(default: 1)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="communication coefficient of S(N) = N / (1 + alpha (N - 1)) for the denoising stage, "
                        "from benchmarks/bench_parallel.py (default: 0.0)")
    p.add_argument("--percentile", type=float, default=0.95,
                   help="latency percentile that must meet the target (default: 0.95)")
    p.add_argument("--max-utilization", type=float, default=0.85,
                   help="headroom cap on how busy replicas may run (default: 0.85)")
    p.set_defaults(func=_run_plan)


def _run_plan(args) -> int:
    from reelgen.scaling.plan import parse_duration, parse_rate, plan_capacity, replica_sizes
    from reelgen.scaling.timings import timings_from_file, timings_from_store

    rate, target = parse_rate(args.rate), parse_duration(args.target_latency)
    try:
        devices = tuple(int(d) for d in args.devices.split(","))
    except ValueError:
        raise ValueError(f"--devices takes device counts like 1,2,4,8, got {args.devices!r}") from None
    if any(d < 1 for d in devices) or not 0 <= args.alpha <= 1:
        raise ValueError("--devices must be positive and --alpha between 0 and 1")
    if args.timings:
        stages = timings_from_file(args.timings)
    elif args.database_url:
        stages = timings_from_store(args.database_url)
    else:
        if args.seconds_per_job <= 0:
            raise ValueError("--seconds-per-job must be positive")
        stages = {"denoise": args.seconds_per_job}
    if "denoise" not in stages:
        raise ValueError(f"the timings have no 'denoise' stage to parallelize: {sorted(stages)}")
    plans = plan_capacity(rate, replica_sizes(stages, devices, args.alpha), target, args.percentile,
                          args.max_utilization)
    per_job = ", ".join(f"{stage} {s:.3f}" for stage, s in stages.items())
    print(f"load: {rate * 60:g} jobs/min, p{args.percentile * 100:g} latency <= {target:g} s; "
          f"one job on one device: {sum(stages.values()):.3f} s ({per_job})")
    print(f"{'replica':<12} {'s/job':>8} {'replicas':>9} {'devices':>8} {'busy':>6} {'latency':>9}  bound")
    for plan in plans:
        print(f"{plan.size.name:<12} {plan.size.seconds_per_job:>8.3f} {plan.replicas:>9} {plan.devices:>8} "
              f"{plan.utilization:>6.0%} {plan.latency_s:>8.2f}s  {plan.bound}")
    skipped = [d for d in devices if d not in {plan.size.devices for plan in plans}]
    if skipped:
        print(f"(replicas of {', '.join(map(str, skipped))} device(s) cannot meet the target: one job takes longer)")
    return 0


def _add_db(sub) -> None:
    p = sub.add_parser("db", help="the job store's schema: upgrade it to this version, or show where it is",
                       description="Alembic migrations of the job store. `reelgen serve` upgrades the database at "
                                   "start by itself; `reelgen db upgrade` does it ahead of a rollout.")
    p.add_argument("action", choices=["upgrade", "current"])
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/reelgen (default: REELGEN_DATABASE_URL, "
                        "else SQLite in REELGEN_DATA_DIR, as `reelgen serve`)")
    p.set_defaults(func=_run_db)


def _run_db(args) -> int:
    from sqlalchemy.exc import OperationalError

    from reelgen.service.jobs import JobStore, schema
    from reelgen.service.settings import ServiceSettings

    store = JobStore(args.database_url or ServiceSettings().database_url)
    try:
        if args.action == "upgrade":
            store.create_schema()
        print(f"{store.engine.url}: at revision {schema.current(store.engine) or 'none (empty)'}, "
              f"this version's head is {schema.head()}")
    except OperationalError as e:
        raise OSError(f"cannot reach the database {store.engine.url}: {e.orig}") from e
    finally:
        store.close()
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only `command`'s: train's flags come from a torch module, and `serve`
    with the Ray executor must not import torch."""
    parser = argparse.ArgumentParser(prog="reelgen", description="Self-hostable AI video generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = {"generate": _add_generate, "eval": _add_eval, "train": _add_train, "serve": _add_serve,
              "worker": _add_worker, "plan": _add_plan, "db": _add_db, "keys": _add_keys}
    for name, add in adders.items():
        if command in (None, name):
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv[:1] in (["serve"], ["worker"], ["db"], ["keys"]) else None).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"reelgen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
