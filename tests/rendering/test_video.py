import os
import struct
from io import BytesIO
import subprocess

import av
import numpy as np
import pytest
from PIL import Image

from reelgen.rendering import video
from reelgen.rendering.video import encode_video, read_video, upscale, write_video



def top_level_boxes(mp4: bytes) -> list[str]:
    """The types of an MP4's top-level boxes (atoms), in file order."""
    boxes, offset = [], 0
    while offset < len(mp4):
        size, kind = struct.unpack(">I4s", mp4[offset : offset + 8])
        if size == 1:  # a 64-bit size follows the type
            size = struct.unpack(">Q", mp4[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode())
        offset += size if size else len(mp4)
    return boxes


def fail_on_call(monkeypatch, owner, name, call, tmp_path, seen):
    """Make owner.name raise on its `call`-th use, recording the directory's contents at that moment."""
    original, calls = getattr(owner, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            seen.extend(os.listdir(tmp_path))
            raise RuntimeError("encoder crashed")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize(
    ("shape", "min_side", "factor"),
    [((32, 32), 256, 8), ((32, 48), 100, 4), ((20, 64), 256, 13), ((300, 400), 256, 1)],
)
def test_upscale_uses_smallest_integer_factor(shape, min_side, factor):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    big = upscale(frames, min_side)
    h, w = shape[0] * factor, shape[1] * factor
    assert big.shape == (2, h + h % 2, w + w % 2, 3)
    assert min(big.shape[1:3]) >= min_side
    assert factor == 1 or min(shape) * (factor - 1) < min_side
    # Nearest neighbour: every k x k block is one source pixel, no blending.
    assert np.array_equal(big[:, :h, :w], frames.repeat(factor, 1).repeat(factor, 2))


def test_upscale_pads_odd_sides_by_repeating_the_edge():
    frames = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)
    padded = upscale(frames, min_side=1)
    assert padded.shape == (2, 4, 6, 3)
    assert np.array_equal(padded[:, :3, :5], frames)
    assert np.array_equal(padded[:, 3, :5], frames[:, 2])
    assert np.array_equal(padded[:, :3, 5], frames[:, :, 4])


def test_mp4_round_trip(frames, tmp_path):
    path = write_video(frames, tmp_path / "clip.mp4", fps=8)
    assert path == tmp_path / "clip.mp4"
    decoded, fps = read_video(path)
    assert decoded.shape == (16, 256, 256, 3)
    assert fps == 8
    # Flat regions, away from the square's edges where chroma subsampling and the DCT may ring:
    # the top rows (background) and the middle of frame 8's square (rows 12..19, columns 8..15).
    background = np.abs(decoded[:, :64].astype(int) - frames[0, 0, 0]).mean()
    square = np.abs(decoded[8, 112:144, 72:120].astype(int) - frames[8, 15, 11]).mean()
    assert background < 10 and square < 10, (background, square)
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_mp4_is_tagged_bt709(frames):
    with av.open(BytesIO(encode_video(frames, "mp4"))) as container:
        first = next(container.decode(video=0))
    assert (first.colorspace, first.color_primaries, first.color_trc) == (1, 1, 1)


def test_mp4_faststart_puts_moov_before_mdat(frames):
    boxes = top_level_boxes(encode_video(frames, "mp4"))
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize(
    ("name", "magic"), [("clip.webm", b"\x1a\x45\xdf\xa3"), ("clip.gif", b"GIF89a")], ids=["webm", "gif"]
)
def test_webm_and_gif_round_trip(frames, tmp_path, name, magic):
    path = write_video(frames, tmp_path / name, fps=8)
    assert path.read_bytes().startswith(magic)
    decoded, fps = read_video(path)
    assert decoded.shape == (16, 256, 256, 3)
    assert abs(fps - 8) < 0.5  # a GIF stores delays in whole centiseconds: 12 cs is 8.33 fps
    assert np.abs(decoded.astype(int) - upscale(frames)).mean() < 10


def test_gif_loops_forever_with_exact_colours(frames, tmp_path):
    path = write_video(frames, tmp_path / "clip.gif")
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0
        assert gif.n_frames == 16
    decoded, _ = read_video(path)
    assert np.array_equal(decoded, upscale(frames))


@pytest.mark.parametrize("name", ["frames", "frames/"])
def test_png_folder_holds_exact_frames(frames, tmp_path, name):
    folder = write_video(frames, f"{tmp_path}/{name}", min_side=64)
    assert folder == tmp_path / "frames"
    files = sorted(os.listdir(folder))
    assert files == [f"frame_{i:04d}.png" for i in range(16)]
    expected = upscale(frames, 64)
    for i, file in enumerate(files):
        assert np.array_equal(np.asarray(Image.open(folder / file)), expected[i])
    assert os.listdir(tmp_path) == ["frames"]


def test_png_folder_refuses_to_replace_a_non_empty_folder(frames, tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="frames"):
        write_video(frames, tmp_path / "frames")
    assert os.listdir(tmp_path / "frames") == ["notes.txt"]
    assert os.listdir(tmp_path) == ["frames"]


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_encode_video_bytes_decode(frames, fmt):
    decoded, _ = read_video(encode_video(frames, fmt, min_side=64))
    assert decoded.shape == (16, 64, 64, 3)


def test_encode_video_rejects_unknown_format(frames):
    with pytest.raises(ValueError, match="mp4, webm, gif"):
        encode_video(frames, "png")


def test_bad_extension_raises_and_leaves_nothing(frames, tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4, \.webm, \.gif"):
        write_video(frames, tmp_path / "clip.avi")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def never_encode(monkeypatch):
    def encode(*args):
        raise AssertionError("encoded before checking the output directory")

    monkeypatch.setattr(video, "_encode", encode)


def test_missing_directory_fails_before_encoding(frames, tmp_path, never_encode):
    with pytest.raises(FileNotFoundError, match="missing"):
        write_video(frames, tmp_path / "missing" / "clip.mp4")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot create files in; root ignores mode bits, so also mark it immutable."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
    else:
        pytest.skip("cannot make a read-only directory here")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("name", ["clip.mp4", "frames"])
def test_unwritable_directory_fails_before_encoding(frames, read_only_dir, never_encode, name):
    with pytest.raises(PermissionError, match="locked"):
        write_video(frames, read_only_dir / name)
    assert os.listdir(read_only_dir) == []


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((4, 8, 8, 4), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
    ids=["float", "3d", "rgba", "empty"],
)
def test_bad_frames_raise(tmp_path, bad):
    with pytest.raises(ValueError, match="frames"):
        write_video(bad, tmp_path / "clip.mp4")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fps", [0, 121])
def test_bad_fps_raises(frames, tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        write_video(frames, tmp_path / "clip.mp4", fps=fps)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "owner", "attr"),
    [
        ("clip.mp4", av.VideoFrame, "from_ndarray"),
        ("clip.webm", av.VideoFrame, "from_ndarray"),
        ("clip.gif", Image, "fromarray"),
        ("frames", Image, "fromarray"),
    ],
)
def test_failure_mid_encode_leaves_no_temp_and_keeps_old_output(frames, tmp_path, monkeypatch, name, owner, attr):
    target = tmp_path / name
    if target.suffix:
        target.write_bytes(b"previous video")
    seen = []
    fail_on_call(monkeypatch, owner, attr, 5, tmp_path, seen)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_video(frames, target)
    assert any(entry.endswith(".tmp") for entry in seen)  # the crash really came mid-write
    assert os.listdir(tmp_path) == ([name] if target.suffix else [])
    if target.suffix:
        assert target.read_bytes() == b"previous video"
