"""Frames <-> video files, thumbnails and spritesheets."""

from reelgen.rendering.images import spritesheet, thumbnail
from reelgen.rendering.video import (
    CONTENT_TYPES,
    SUPPORTED_EXTENSIONS,
    check_output_path,
    encode_video,
    read_video,
    upscale,
    write_video,
)

__all__ = [
    "CONTENT_TYPES",
    "SUPPORTED_EXTENSIONS",
    "check_output_path",
    "encode_video",
    "read_video",
    "spritesheet",
    "thumbnail",
    "upscale",
    "write_video",
]
