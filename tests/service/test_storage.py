"""The object store: keys from job ids, atomic writes, prefix deletes, on a folder and on fsspec's memory fs."""

from __future__ import annotations

import threading
import uuid

import pytest

from reelgen.service.storage import (
    ObjectStore,
    StorageUnavailable,
    attempt_prefix,
    attempts_prefix,
    input_key,
    job_prefix,
    output_key,
)


@pytest.fixture(params=["folder", "memory"])
def any_storage(request, tmp_path):
    url = str(tmp_path / "files") if request.param == "folder" else f"memory://{uuid.uuid4().hex}/files"
    return ObjectStore(url)


def test_keys_come_from_the_job_id_and_attempt_only():
    assert output_key("video_ab", 3, "video", "webm") == "videos/video_ab/attempts/3/video.webm"
    assert output_key("video_ab", 3, "thumbnail", "webm") == "videos/video_ab/attempts/3/thumbnail.jpg"
    assert input_key("video_ab") == "videos/video_ab/input"
    assert attempt_prefix("video_ab", 3).startswith(job_prefix("video_ab"))


def test_put_get_info_children_and_delete(any_storage):
    key = output_key("video_1", 1, "video", "mp4")
    any_storage.put(key, b"0123456789")
    assert any_storage.get(key) == b"0123456789"
    assert any_storage.info(key).size == 10
    with any_storage.open(key) as f:
        f.seek(4)
        assert f.read(3) == b"456"
    assert any_storage.children(attempts_prefix("video_1")) == [attempt_prefix("video_1", 1)]
    any_storage.delete(job_prefix("video_1"))
    assert any_storage.info(key) is None and any_storage.children(job_prefix("video_1")) == []
    any_storage.delete(job_prefix("video_1"))  # deleting nothing is not an error


def test_a_failed_write_leaves_the_old_file_and_no_partial(any_storage, monkeypatch):
    key = output_key("video_1", 1, "video", "mp4")
    any_storage.put(key, b"old")

    def broken_move(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(any_storage.fs, "mv", broken_move)
    with pytest.raises(OSError, match="disk full"):
        any_storage.put(key, b"new and longer")
    assert any_storage.get(key) == b"old"
    assert any_storage.children(attempt_prefix("video_1", 1)) == [key]  # no .partial left behind


def test_an_overwrite_replaces_the_whole_file(any_storage):
    key = output_key("video_1", 1, "thumbnail", "mp4")
    any_storage.put(key, b"a much longer first version")
    any_storage.put(key, b"short")
    assert any_storage.get(key) == b"short"


def test_a_write_that_reads_back_short_is_an_error(any_storage, monkeypatch):
    key = output_key("video_1", 1, "video", "mp4")
    write = any_storage.fs.pipe_file
    monkeypatch.setattr(any_storage.fs, "pipe_file", lambda path, data, **kw: write(path, data[:-1], **kw))
    with pytest.raises(OSError, match="reads back as"):
        any_storage.put(key, b"0123456789")


def test_put_retrying_outlasts_a_short_outage_and_gives_up_after_retry_seconds(monkeypatch):
    storage = ObjectStore(f"memory://{uuid.uuid4().hex}/files", retry_seconds=30)
    write, failures = storage.fs.pipe_file, []

    def flaky(path, data, **kwargs):
        if len(failures) < 2:
            failures.append(path)
            raise ConnectionError("store unreachable")
        write(path, data, **kwargs)

    monkeypatch.setattr(storage.fs, "pipe_file", flaky)
    key = output_key("video_1", 1, "video", "mp4")
    storage.put_retrying(key, b"data", stop=threading.Event())
    assert len(failures) == 2 and storage.get(key) == b"data"

    failures.clear()
    storage.retry_seconds = 0  # no time for a retry: the first failure is final
    with pytest.raises(StorageUnavailable, match="ConnectionError: store unreachable"):
        storage.put_retrying(key, b"new", stop=threading.Event())
    storage.retry_seconds, stopped = 30, threading.Event()
    stopped.set()  # a cancelled job stops waiting for the store at once
    failures.clear()
    with pytest.raises(StorageUnavailable):
        storage.put_retrying(key, b"new", stop=stopped)
    assert storage.get(key) == b"data"
