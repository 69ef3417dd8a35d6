"""upload_file against moto: one PUT for small files, a parallel multipart upload for large ones."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import StoreConfig
from obsfs.backend.obs import ObsStore
from obsfs.errors import AccessDenied, PreconditionFailed, StoreError, TemporaryFailure
from obsfs.upload import local_etags, upload_file
from tests.conftest import store_config
from tests.s3server import S3Server

MiB = 1 << 20
PART = 5 * MiB
META = {"mode": "33188", "uid": "1000", "gid": "1000", "mtime": "1700000000"}


class RecordingStore(ObsStore):
    """The real store, plus a record of which calls were made and how many parts ran at once."""

    def __init__(self, config: StoreConfig, bucket: str) -> None:
        super().__init__(config, bucket)
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.fail_part: dict[int, list[Exception]] = {}  # part number -> errors to raise first
        self.part_delay = 0.0  # seconds each part takes at least, so that parallel parts overlap

    def put_file(self, key: str, path: str, **kwargs: Any) -> str:
        self.calls.append("put_file")
        return super().put_file(key, path, **kwargs)

    def initiate_multipart(self, key: str, **kwargs: Any) -> str:
        self.calls.append("initiate")
        return super().initiate_multipart(key, **kwargs)

    def upload_part(self, key: str, upload_id: str, part_no: int, path: str, offset: int, size: int) -> str:
        with self.lock:
            self.calls.append(f"part {part_no} {offset} {size}")
            errors = self.fail_part.get(part_no)
            if errors:
                raise errors.pop(0)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.part_delay)
            return super().upload_part(key, upload_id, part_no, path, offset, size)
        finally:
            with self.lock:
                self.active -= 1

    def complete_multipart(self, key: str, upload_id: str, parts: Any, **conditions: Any) -> None:
        self.calls.append("complete")
        super().complete_multipart(key, upload_id, parts, **conditions)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.calls.append("abort")
        super().abort_multipart(key, upload_id)


@pytest.fixture
def recording(moto: S3Server, bucket: str) -> Iterator[RecordingStore]:
    store = RecordingStore(store_config(moto), bucket)
    yield store
    store.close()


def make_file(tmp_path: Path, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / f"staged-{size}"
    path.write_bytes(data)
    return str(path), data


def upload(store: ObsStore, key: str, path: str, size: int, parallel: int = 4, **conditions: Any) -> str | None:
    astore = AsyncStore(store, read_deadline=10, write_deadline=30)

    async def main() -> str | None:
        return await upload_file(astore, key, path, size, metadata=META, content_type="application/x-test",
                                 part_size=PART, parallel=parallel, **conditions)

    return trio.run(main)


def check_stored(s3: Any, bucket: str, key: str, data: bytes, etag: str | None) -> dict[str, Any]:
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data
    assert got["Metadata"] == META
    assert got["ContentType"] == "application/x-test"
    assert etag == s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    return dict(got)


@pytest.mark.parametrize("size", [0, 1000, PART])
def test_small_file_is_one_put(recording: RecordingStore, s3: Any, bucket: str, tmp_path: Path,
                               size: int) -> None:
    path, data = make_file(tmp_path, size)
    etag = upload(recording, "small", path, size)
    assert recording.calls == ["put_file"]
    check_stored(s3, bucket, "small", data, etag)
    assert etag is not None and "-" not in etag


def test_large_file_is_a_parallel_multipart_upload(recording: RecordingStore, s3: Any, bucket: str,
                                                   tmp_path: Path) -> None:
    size = 12 * MiB
    path, data = make_file(tmp_path, size)
    recording.part_delay = 0.2
    etag = upload(recording, "dir/large", path, size, parallel=2)
    assert recording.calls[0] == "initiate"
    assert recording.calls[-1] == "complete"
    assert sorted(recording.calls[1:-1]) == [f"part 1 0 {PART}", f"part 2 {PART} {PART}",
                                             f"part 3 {2 * PART} {2 * MiB}"]
    assert "put_file" not in recording.calls
    assert recording.max_active == 2  # parallel, but no more than asked
    check_stored(s3, bucket, "dir/large", data, etag)
    assert etag is not None and etag.endswith("-3")


def test_one_byte_over_the_part_size(recording: RecordingStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, PART + 1)
    etag = upload(recording, "edge", path, PART + 1)
    assert sorted(c for c in recording.calls if c.startswith("part")) == [f"part 1 0 {PART}", f"part 2 {PART} 1"]
    check_stored(s3, bucket, "edge", data, etag)


def test_temporary_part_failure_is_retried(recording: RecordingStore, s3: Any, bucket: str,
                                           tmp_path: Path) -> None:
    size = 2 * PART
    path, data = make_file(tmp_path, size)
    recording.fail_part[2] = [TemporaryFailure("upload part 2: HTTP 503 SlowDown", status=503)]
    etag = upload(recording, "retried", path, size)
    assert recording.calls.count(f"part 2 {PART} {PART}") == 2
    assert "abort" not in recording.calls
    check_stored(s3, bucket, "retried", data, etag)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def test_failed_part_aborts_the_upload(recording: RecordingStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    size = 3 * PART
    path, _ = make_file(tmp_path, size)
    denied = AccessDenied("upload part 2 of k: access denied", status=403, code="AccessDenied")
    recording.fail_part[2] = [denied]
    with pytest.raises(BaseException) as err:  # noqa: B017 - the shape is checked below
        upload(recording, "failed", path, size)
    assert denied in _leaves(err.value)
    assert "abort" in recording.calls
    assert "complete" not in recording.calls
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_failed_part_raises_the_store_error(recording: RecordingStore, tmp_path: Path) -> None:
    size = 2 * PART
    path, _ = make_file(tmp_path, size)
    recording.fail_part[1] = [AccessDenied("upload part 1 of k: access denied", status=403)]
    with pytest.raises(StoreError):
        upload(recording, "failed", path, size)


@pytest.mark.parametrize("size", [1000, PART + 1000])
def test_if_none_match_refuses_to_overwrite(recording: RecordingStore, s3: Any, bucket: str, tmp_path: Path,
                                            size: int) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"someone else's")
    path, _ = make_file(tmp_path, size)
    with pytest.raises(PreconditionFailed):
        upload(recording, "k", path, size, if_none_match=True)
    assert "complete" not in recording.calls
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"someone else's"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    path, data = make_file(tmp_path, size)
    etag = upload(recording, "new", path, size, if_none_match=True)
    check_stored(s3, bucket, "new", data, etag)


@pytest.mark.parametrize("size", [1000, PART + 1000])
def test_if_match(recording: RecordingStore, s3: Any, bucket: str, tmp_path: Path, size: int) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"base")
    base = s3.head_object(Bucket=bucket, Key="k")["ETag"].strip('"')
    path, data = make_file(tmp_path, size)
    with pytest.raises(PreconditionFailed):
        upload(recording, "k", path, size, if_match="0" * 32)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"base"
    etag = upload(recording, "k", path, size, if_match=base)
    check_stored(s3, bucket, "k", data, etag)


@pytest.mark.parametrize("size", [0, 1000, PART, 2 * PART + 123])
def test_local_etag_is_what_the_server_computes(recording: RecordingStore, tmp_path: Path, size: int) -> None:
    """How a retry recognises its own earlier attempt (one that timed out yet reached the store)."""
    path, _ = make_file(tmp_path, size)
    assert upload(recording, "k", path, size) in local_etags(path, size, PART)
