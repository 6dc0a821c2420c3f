"""schemathesis against the service's own OpenAPI document, on a live server: no 5xx, no schema violation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.service.live import API_KEY, Server

pytestmark = pytest.mark.slow

_IDEMPOTENCY_422 = """
[[operations]]
include-operation-id = "create_video"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path, tiny_model_dir):
    server = Server(tmp_path, tiny_model_dir).start()
    try:
        # A fixed seed keeps CI reproducible. The coverage phase walks every operation's boundary and invalid
        # values systematically; a few fuzzed examples per operation add random ones. `--checks all` includes
        # response schema, status code, content type and header conformance, negative data rejection and auth.
        # An Idempotency-Key reused with another body is 422 (IETF draft): the fuzzer, stateless, reuses keys
        config = tmp_path / "schemathesis.toml"
        config.write_text(_IDEMPOTENCY_422)
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
             f"{server.url}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {API_KEY}", "--phases", "examples,coverage,fuzzing",
             "--max-examples", "3", "--workers", "1", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its .schemathesis cache goes there
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
