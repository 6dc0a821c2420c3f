"""Service fixtures: a job store and object store in a temp folder, and apps over the tiny model or a fake one."""

from __future__ import annotations

import pytest

from reelgen.service.jobs import JobStore
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore
from tests.service.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock) -> JobStore:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", lease_seconds=10, max_attempts=2, retention_seconds=100,
                     clock=clock)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a loopback port for the whole session (tests/service/postgres.py)."""
    from tests.service.postgres import PostgresServer

    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request, tmp_path) -> str:
    """An empty job database of each kind the store supports: a SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def storage(tmp_path) -> ObjectStore:
    return ObjectStore(str(tmp_path / "files"))


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory):
    """A small model with 2x2 patches: ~50 ms a step on one core, so a 200-step job lasts about 10 s, time to act
    on it mid-job even on a loaded machine (at ~10 ms a step, a full CI run saw a job finish before its Cancel
    click)."""
    from tests.service.helpers import save_slow_model

    return save_slow_model(tmp_path_factory.mktemp("slow-model"), dim=128, depth=4)


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir):
    """One built-in generator over the tiny model for every app in the session: the model loads once."""
    from reelgen.backends.builtin import BuiltinGenerator

    return BuiltinGenerator(tiny_model_dir)


@pytest.fixture
def open_app(make_settings):
    """Start apps (lifespan entered: workers running) over the given generators; all stop when the test ends."""
    from fastapi.testclient import TestClient

    from reelgen.service.app import create_app

    clients = []

    def open_(generators, **settings) -> TestClient:
        client = TestClient(create_app(make_settings(**settings), generators))
        clients.append(client.__enter__())
        return client

    yield open_
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_settings(tmp_path):
    def make(**overrides) -> ServiceSettings:
        defaults = dict(data_dir=tmp_path / "data", poll_seconds=0.05, housekeeping_seconds=0.2, lease_seconds=2,
                        shutdown_grace_seconds=0, signing_secret="test-secret")
        return ServiceSettings(**(defaults | overrides))

    return make
