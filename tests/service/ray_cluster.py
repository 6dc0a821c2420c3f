"""A real Ray cluster on this machine for tests: `ray start --head` plus more nodes, stopped after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.service.helpers import wait_until

RAY = str(Path(sys.executable).with_name("ray"))


@contextmanager
def ray_cluster(*node_resources: dict[str, float], num_cpus: int = 1) -> Iterator[str]:
    """One node per dict of custom resources, the first the head, each with `num_cpus` CPUs -> the head's address.

    `--block` keeps each node's processes children of a process this helper owns, so stopping it stops
    exactly this cluster (`ray stop` would stop every Ray cluster on the machine). A short private temp dir
    keeps Ray's socket paths under the Unix limit. RAY_AUTH_MODE=disabled, for the nodes and for drivers
    this process starts or is: a token left in ~/.ray by another Ray setup would otherwise make the nodes
    demand token auth that nothing here sets up.
    """
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    address = f"127.0.0.1:{_free_port()}"
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", f"--temp-dir={temp}",
              "--disable-usage-stats"]
    auth_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = []
    try:
        for i, resources in enumerate(node_resources):
            role = [f"--port={address.split(':')[1]}", "--head", "--include-dashboard=false"] if i == 0 else \
                [f"--address={address}"]
            command = [RAY, "start", *role, f"--resources={json.dumps(resources)}", *common]
            nodes.append(_start_node(command, env, Path(temp) / f"node{i}.log"))
        yield address
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)  # each drains and stops its own processes
            node.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        if auth_before is None:
            del os.environ["RAY_AUTH_MODE"]
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before


def _start_node(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start one node and wait until `ray start` says it joined the cluster. Tried again if it exits while
    starting: a raylet gives its dashboard agent 15 s to start and then exits (ray-project/ray#65983), which a
    busy 2-core machine hits."""
    for _ in range(3):
        with open(log, "w") as out:
            node = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: node.poll() is not None or "Ray runtime started." in log.read_text(), timeout=300,
                       interval=0.5, message=f"the Ray node of {log.name} to start")
        except AssertionError:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=120)
            raise
        if node.poll() is None:
            return node
    raise AssertionError(f"a Ray node exited while starting, 3 times:\n{log.read_text()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
