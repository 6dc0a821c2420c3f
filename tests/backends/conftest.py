"""Tiny random pipelines of every family, saved once per session in diffusers format."""

from __future__ import annotations

import io

import pytest
from PIL import Image

FAMILIES = ("wan", "wan-i2v", "cogvideox", "ltx", "hunyuan-video", "svd")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, object]:
    from reelgen.backends.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-pipelines")
    return {family: save_tiny_pipeline(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_registry(tiny_dirs):
    """A registry serving all six tiny pipelines, as a service would load it from models.toml."""
    from reelgen.backends.registry import parse_registry
    from reelgen.backends.tiny import tiny_registry_entry

    return parse_registry("".join(tiny_registry_entry(f, p) for f, p in tiny_dirs.items()), source="tiny.toml")


def png_bytes(size=(40, 24), color=(200, 40, 40), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()
