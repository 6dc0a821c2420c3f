"""A real `reelgen serve` subprocess on a loopback port, for the end-to-end and fuzzing tests, and `reelgen worker`
subprocesses beside one started with --workers 0."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment() -> dict[str, str]:
    return {**os.environ, "REELGEN_API_KEYS": json.dumps([API_KEY]), "REELGEN_SIGNING_SECRET": "e2e-secret",
            # the tests poll and fuzz far faster than a key's default limits allow (test_keys.py tests those)
            "REELGEN_REQUESTS_PER_MINUTE": "0", "REELGEN_MAX_CONCURRENT_JOBS": "0",
            # one torch thread: on a shared 2-core machine more threads make a tiny model's step 100x slower
            "OMP_NUM_THREADS": "1"}


class _Process:
    """A subprocess logging to a file, which the tests start, signal and stop."""

    log: Path
    proc: subprocess.Popen | None = None

    def _launch(self, command: list[str], cwd: Path, probe_url: str) -> None:
        """Start `command` and wait until it answers 200 at `probe_url`."""
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "reelgen.cli", *command], env=_environment(),
                                         stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        wait_until(lambda: self._answers(probe_url), timeout=180, interval=0.1, message=f"an answer on {probe_url}")

    def _answers(self, url: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[3]} exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)


class Server(_Process):
    """One `reelgen serve` subprocess over a data folder that outlives it, so it can be killed and restarted."""

    def __init__(self, root: Path, model_dir: Path, extra_args: tuple[str, ...] = ()):
        self.root, self.model_dir, self.extra_args = root, model_dir, extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"

    def settings_args(self) -> list[str]:
        """The settings flags, which its `reelgen worker` processes are given too."""
        return ["--data-dir", str(self.root / "data"), "--model-dir", str(self.model_dir), "--lease-seconds", "3",
                "--housekeeping-seconds", "0.5", "--poll-seconds", "0.2", "--shutdown-grace-seconds", "0",
                "--log-level", "info"]

    def start(self) -> Server:
        self._launch(["serve", "--port", str(self.port), *self.settings_args(), *self.extra_args], self.root,
                     f"{self.url}/health")
        return self

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=API_KEY, max_retries=0)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)


class WorkerProcess(_Process):
    """One `reelgen worker` sharing a Server's database and files (start that one with --workers 0); `extra_args`
    come after the server's settings flags, so they win."""

    def __init__(self, server: Server, name: str, extra_args: tuple[str, ...] = ()):
        self.server, self.extra_args = server, extra_args
        self.metrics_port = free_port()
        self.log = server.root / f"{name}.log"

    def start(self) -> WorkerProcess:
        self._launch(["worker", "--metrics-port", str(self.metrics_port), *self.server.settings_args(),
                      *self.extra_args], self.server.root, self.metrics_url)
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"
