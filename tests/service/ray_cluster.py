"""A real Ray cluster on this machine for tests: `ray start --head` plus more nodes, stopped after."""

from __future__ import annotations

import json
import os
import re
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
    log = open(Path(temp) / "nodes.log", "a")
    try:
        for i, resources in enumerate(node_resources):
            role = [f"--port={address.split(':')[1]}", "--head", "--include-dashboard=false"] if i == 0 else \
                [f"--address={address}"]
            nodes.append(subprocess.Popen([RAY, "start", *role, f"--resources={json.dumps(resources)}", *common],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
            wait_until(lambda: _nodes(address) == i + 1, timeout=120, interval=1, message=f"Ray node {i + 1}")
        yield address
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)  # each drains and stops its own processes
            node.wait(timeout=120)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        if auth_before is None:
            del os.environ["RAY_AUTH_MODE"]
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str) -> int:
    """Alive nodes, as `ray status` reports them."""
    status = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, text=True)
    if status.returncode != 0:
        return 0
    active = status.stdout.split("Active:")[1].split("Pending:")[0] if "Active:" in status.stdout else ""
    return len(re.findall(r"node_\w+", active))
