"""Settings: defaults that need nothing installed, and REELGEN_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reelgen.service.settings import ServiceSettings


def test_defaults_put_the_database_and_files_in_the_data_dir():
    settings = ServiceSettings(data_dir=Path("/srv/reelgen"))
    assert settings.database_url == "sqlite:////srv/reelgen/jobs.db"
    assert settings.storage_url == "/srv/reelgen/files"
    assert settings.heartbeat_seconds == settings.lease_seconds / 3


def test_environment_variables_configure_and_arguments_override(monkeypatch):
    monkeypatch.setenv("REELGEN_WORKERS", "3")
    monkeypatch.setenv("REELGEN_API_KEYS", '["a", "b"]')
    monkeypatch.setenv("REELGEN_STORAGE_URL", "memory://bucket")
    settings = ServiceSettings()
    assert (settings.workers, settings.api_keys, settings.storage_url) == (3, ["a", "b"], "memory://bucket")
    assert ServiceSettings(workers=1).workers == 1


def test_bad_values_are_refused():
    with pytest.raises(ValidationError):
        ServiceSettings(workers=-1)
    with pytest.raises(ValidationError):
        ServiceSettings(unknown_knob=1)


def test_signed_links_need_no_configured_secret_but_take_one():
    assert ServiceSettings().signing_secret.get_secret_value() != ServiceSettings().signing_secret.get_secret_value()
    assert ServiceSettings(signing_secret="s").signing_secret.get_secret_value() == "s"
