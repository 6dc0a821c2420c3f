"""Frames <-> video files: MP4 (H.264), WebM (VP9), GIF and folders of PNG frames, with PyAV and Pillow."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from PIL import Image

# A path with none of these suffixes (or ending in "/") is written as a folder of PNG frames.
SUPPORTED_EXTENSIONS = (".mp4", ".webm", ".gif")
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "gif": "image/gif",
    "png": "image/png",
    "jpeg": "image/jpeg",
}


@dataclass(frozen=True)
class _Codec:
    name: str  # FFmpeg encoder
    options: dict[str, str]  # encoder options
    muxer_options: dict[str, str] = field(default_factory=dict)


# Keyed by FFmpeg muxer name, which is also the file extension.
_CODECS = {
    # faststart moves the index (moov) to the front so a browser can play while downloading.
    "mp4": _Codec("libx264", {"crf": "18", "preset": "medium"}, {"movflags": "+faststart"}),
    # b=0 makes crf a constant-quality target instead of a cap under the default bitrate.
    "webm": _Codec("libvpx-vp9", {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}


def upscale(frames: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale (F, H, W, 3) by the smallest integer factor giving a short side >= min_side."""
    frames = _check_frames(frames)
    if min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    factor = math.ceil(min_side / min(frames.shape[1:3]))
    if factor > 1:
        frames = frames.repeat(factor, axis=1).repeat(factor, axis=2)  # (F, H*k, W*k, 3)
    # yuv420p keeps one chroma sample per 2x2 block, so H.264 and VP9 need even sides:
    # repeat the last row/column rather than crop away content.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def check_output_path(path: str | os.PathLike) -> tuple[Path, str]:
    """(path, format) for an output path, or a clear error before any work is done.

    Checks the extension, that the directory exists and is writable, and that
    a PNG folder would not overwrite anything.
    """
    folder = str(path).endswith(("/", os.sep)) or not Path(path).suffix
    path = Path(path)
    if folder:
        fmt = "png"
    elif path.suffix.lower() in SUPPORTED_EXTENSIONS:
        fmt = path.suffix.lower()[1:]
    else:
        raise ValueError(f"unsupported video extension {path.suffix!r}: use one of {', '.join(SUPPORTED_EXTENSIONS)}"
                         " or a folder path (no suffix) for PNG frames")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"output directory is not writable: {path.parent}")
    if folder and path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"refusing to replace a non-empty folder: {path}")
    return path, fmt


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 8, min_side: int = 256) -> Path:
    """Write frames to `path` (.mp4, .webm, .gif, or a folder of PNGs), atomically: all or nothing."""
    path, fmt = check_output_path(path)
    folder = fmt == "png"
    frames = _prepare(frames, fps, min_side)
    tmp = _reserve_temp(path, folder)
    try:
        _encode(frames, tmp, fmt, fps)
        os.replace(tmp, path)
    except BaseException:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return path


def encode_video(frames: np.ndarray, fmt: str = "mp4", fps: float = 8, min_side: int = 256) -> bytes:
    """Encode frames as an .mp4, .webm or .gif file in memory."""
    if f".{fmt}" not in SUPPORTED_EXTENSIONS:
        formats = ", ".join(ext[1:] for ext in SUPPORTED_EXTENSIONS)
        raise ValueError(f"unsupported video format {fmt!r}: use one of {formats}")
    frames = _prepare(frames, fps, min_side)
    # FFmpeg's faststart pass reopens the output by name, so it cannot write to a BytesIO: go through a file.
    with tempfile.TemporaryDirectory(prefix="reelgen-") as tmp:
        out = Path(tmp) / f"video.{fmt}"
        _encode(frames, out, fmt, fps)
        return out.read_bytes()


def read_video(path_or_bytes: str | os.PathLike | bytes) -> tuple[np.ndarray, float]:
    """Decode the first video stream to uint8 (F, H, W, 3) RGB frames and its frame rate."""
    source = BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError("no video stream to decode")
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        rate = stream.average_rate or stream.guessed_rate
    return np.stack(frames), float(rate)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    if frames.size == 0:
        raise ValueError(f"frames must hold at least one frame of at least 1x1 pixels, got {frames.shape}")
    return frames


def _prepare(frames: np.ndarray, fps: float, min_side: int) -> np.ndarray:
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {fps}")
    return upscale(frames, min_side)


def _reserve_temp(path: Path, folder: bool) -> Path:
    """Create an empty sibling of `path` to encode into; fails with a clear error before any encoding."""
    # A random name created with default permissions: mkstemp/mkdtemp would leave the result private (0600/0700).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if folder:
            tmp.mkdir()
        else:
            tmp.touch(exist_ok=False)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"output directory does not exist: {path.parent}") from None
    except PermissionError:
        raise PermissionError(f"output directory is not writable: {path.parent}") from None
    return tmp


def _encode(frames: np.ndarray, target: Path, fmt: str, fps: float) -> None:
    """The one encoder behind write_video and encode_video: upscaled frames -> `target` in `fmt`."""
    if fmt == "png":
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(target / f"frame_{i:04d}.png")
    elif fmt == "gif":
        _write_gif(frames, target, fps)
    else:
        _write_av(frames, target, fmt, fps)


def _write_gif(frames: np.ndarray, target: Path, fps: float) -> None:
    # Pillow gives each frame its own adaptive palette, exact for flat-coloured frames; FFmpeg's gif
    # encoder would need a palettegen pass for that. Pillow merges identical consecutive frames into
    # one longer frame, so a still clip decodes to fewer (but equally timed) frames.
    images = [Image.fromarray(frame) for frame in frames]
    # GIF delays are whole centiseconds, and browsers play delays under 2 cs at 10 cs.
    delay_cs = max(2, round(100 / fps))
    images[0].save(target, format="GIF", save_all=True, append_images=images[1:], duration=delay_cs * 10, loop=0)


def _write_av(frames: np.ndarray, target: Path, fmt: str, fps: float) -> None:
    codec = _CODECS[fmt]
    with av.open(str(target), "w", format=fmt, container_options=codec.muxer_options) as container:
        stream = container.add_stream(codec.name, rate=Fraction(str(fps)), options=codec.options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # Players guess the RGB<->YUV matrix of untagged video differently (BT.601 vs BT.709),
        # so convert with BT.709 explicitly and say so in the stream.
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range = Colorspace.ITU709, ColorRange.MPEG
        ctx.color_primaries, ctx.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            yuv = rgb.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())  # flush the encoder's delayed frames
