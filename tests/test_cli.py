"""The `reelgen` command as a user runs it: real processes, real files, exit codes."""

import subprocess
import sys

import pytest

from reelgen.cli import main
from reelgen.rendering.video import read_video


def run(*args):
    return subprocess.run([sys.executable, "-m", "reelgen.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_help_explains_every_generate_option():
    out = run("generate", "--help").stdout
    for flag in ("--seed", "--steps", "--guidance", "--sampler", "--negative-prompt", "--frames", "--fps", "-o"):
        assert flag in out


def test_generate_writes_a_decodable_mp4(tiny_model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    r = run("generate", "a red ball moving left", "-o", out, "--model-dir", tiny_model_dir, "--steps", "2",
            "--frames", "6", "--fps", "6", "--quiet")
    assert r.returncode == 0, r.stderr
    frames, fps = read_video(out)
    assert frames.shape == (6, 256, 256, 3) and fps == 6
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp files left


def test_generate_png_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "frames"
    code = main(["generate", "a blue box", "-o", str(out), "--model-dir", str(tiny_model_dir), "--steps", "1",
                 "--frames", "3", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]


@pytest.mark.parametrize("args, message", [
    (["", "-o", "{tmp}/a.mp4"], "prompt"),
    (["x", "-o", "{tmp}/a.mp4", "--frames", "0"], "frames"),
    (["x", "-o", "{tmp}/a.mp4", "--frames", "99"], "frames"),
    (["x", "-o", "{tmp}/a.mp4", "--steps", "0"], "steps"),
    (["x", "-o", "{tmp}/a.mp4", "--guidance", "-2"], "guidance"),
    (["x", "-o", "{tmp}/a.mp4", "--sampler", "plms"], "sampler"),
    (["x", "-o", "{tmp}/a.mp4", "--fps", "0"], "fps"),
    (["x", "-o", "{tmp}/a.avi"], "extension"),
    (["x", "-o", "{tmp}/missing/a.mp4"], "does not exist"),
])
def test_bad_input_one_clear_message_nonzero_exit_no_file(tiny_model_dir, tmp_path, capsys, args, message):
    # In-process for speed; the subprocess test below checks the same path end to end.
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main(["generate", *args, "--model-dir", str(tiny_model_dir), "--quiet"])
    except SystemExit as e:  # argparse rejects unknown choices itself
        code = e.code
    assert code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_exits_nonzero_from_a_real_process(tmp_path):
    r = run("generate", "x", "-o", tmp_path / "a.mp4", "--model-dir", tmp_path / "nope")
    assert r.returncode == 2 and "config.json" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_writes_json_and_markdown(tiny_model_dir, tmp_path, capsys):
    code = main(["eval", "--model-dir", str(tiny_model_dir), "-n", "1", "--steps", "1", "-o", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "eval.md").is_file()
    assert "| model | eval |" in capsys.readouterr().out
