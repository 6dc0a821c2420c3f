"""A real `reelgen serve` subprocess on a loopback port, for the end-to-end and fuzzing tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.service.helpers import wait_until

API_KEY = "e2e-key"


class Server:
    """One `reelgen serve` subprocess over a data folder that outlives it, so it can be killed and restarted."""

    def __init__(self, root: Path, model_dir: Path, extra_args: tuple[str, ...] = ()):
        self.root, self.model_dir, self.extra_args = root, model_dir, extra_args
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "server.log"

    def start(self) -> Server:
        command = [sys.executable, "-m", "reelgen.cli", "serve", "--port", str(self.port),
                   "--data-dir", str(self.root / "data"), "--model-dir", str(self.model_dir),
                   "--lease-seconds", "3", "--housekeeping-seconds", "0.5", "--poll-seconds", "0.2",
                   "--shutdown-grace-seconds", "0", "--log-level", "info", *self.extra_args]
        env = {**os.environ, "REELGEN_API_KEYS": json.dumps([API_KEY]), "REELGEN_SIGNING_SECRET": "e2e-secret",
               # one torch thread: on a shared 2-core machine more threads make a tiny model's step 100x slower
               "OMP_NUM_THREADS": "1"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        wait_until(self._ready, timeout=180, interval=0.1, message=f"the server to answer on {self.url}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=API_KEY, max_retries=0)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
