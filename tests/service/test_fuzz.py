"""schemathesis against the service's own OpenAPI document, on a live server: no 5xx, no schema violation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.service.live import API_KEY, Server

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path, tiny_model_dir):
    server = Server(tmp_path, tiny_model_dir).start()
    try:
        # A fixed seed keeps CI reproducible. The coverage phase walks every operation's boundary and invalid
        # values systematically; a few fuzzed examples per operation add random ones. `--checks all` includes
        # response schema, status code, content type and header conformance, negative data rejection and auth.
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {API_KEY}", "--phases", "examples,coverage,fuzzing",
             "--max-examples", "3", "--workers", "1", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its .schemathesis cache goes there
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
