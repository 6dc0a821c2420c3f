"""What API keys cost per request: GET /v1/models with auth off, and with a key (looked up by its hash, and its
requests-per-minute counter written), in-process (TestClient) over a SQLite job store in a temp folder.

    .venv/bin/python benchmarks/bench_keys.py --requests 500
"""

from __future__ import annotations

import statistics
import tempfile
import time

from common import begin, model_parser  # benchmarks/common.py
from fastapi.testclient import TestClient

from reelgen.backends.builtin import BuiltinGenerator
from reelgen.service.app import create_app
from reelgen.service.settings import ServiceSettings


def timings(requests: int, model_dir, with_key: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        # workers=0: no worker threads polling the store while requests are timed. A key's counter is written
        # only under a limit: time that case, with a limit too high to refuse.
        settings = ServiceSettings(data_dir=root, workers=0, requests_per_minute=10 * requests)
        with TestClient(create_app(settings, [BuiltinGenerator(model_dir)])) as client:
            headers = {}
            if with_key:
                _, secret = client.app.state.services.keys.create("bench")
                headers = {"Authorization": f"Bearer {secret}"}
            for _ in range(50):  # warm-up: connections, caches
                assert client.get("/v1/models", headers=headers).status_code == 200
            seconds = []
            for _ in range(requests):
                start = time.perf_counter()
                assert client.get("/v1/models", headers=headers).status_code == 200
                seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--requests", type=int, default=500, help="timed requests per mode")
    args = parser.parse_args()
    begin(args)
    medians = {}
    for name, with_key in (("auth off", False), ("with a key", True)):
        seconds = timings(args.requests, args.model_dir, with_key)
        medians[name] = statistics.median(seconds)
        p95 = statistics.quantiles(seconds, n=20)[-1]
        print(f"{name:>10}: median {medians[name] * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms ({args.requests} requests)")
    print(f"a key adds {(medians['with a key'] - medians['auth off']) * 1000:.2f} ms per request (median)")


if __name__ == "__main__":
    main()
