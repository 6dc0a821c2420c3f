"""Shared fixtures: tiny seeded models, as diffusers' tests build them."""

from __future__ import annotations

import logging

import pytest

from tests.tiny import make_tiny_model


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands run in-process (`main(["worker", ...])`) point the root logger at the stderr pytest captured for
    that test; later tests' log lines would go to that closed stream, each with a page of "Logging error"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def text_encoder():
    from reelgen.models.text_encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_pipeline(text_encoder):
    from reelgen.pipelines.text_to_video import TextToVideoPipeline

    return TextToVideoPipeline(make_tiny_model(), text_encoder)
