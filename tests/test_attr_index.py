"""``-o attr_index`` (obsfs/indexing.py): a cold listing of what obsfs wrote needs no HEAD, and an
index that is stale, foreign or broken changes nothing that is shown."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from obsfs.attrindex import INDEX_DIR
from tests.conftest import boto_client
from tests.mounting import Mounter
from tests.s3server import S3Server, start_moto

BUCKET = "attrindex"
FILES = 20


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[S3Server]:
    """A moto server of the test's own whose request log the test reads."""
    server = start_moto(log_path=tmp_path / "moto.log")
    yield server
    server.stop()


def headed(server: S3Server, path_prefix: str) -> list[str]:
    """The files (not directory markers) the server logged HEADs of under ``path_prefix``, in order."""
    assert server.log_path is not None
    text = re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text(errors="replace"))
    return re.findall(rf'"HEAD ({re.escape(path_prefix)}\S*[^/]) HTTP', text)


def index_of(s3: Any, directory: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=BUCKET, Key=f"{INDEX_DIR}/{directory}/index.json")["Body"].read()
    return dict(json.loads(body)["entries"])


def keys(s3: Any) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def shown(path: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns


def after_the_second_of(s3: Any, key: str) -> None:
    """Wait until the clock is past the second ``key`` was last modified in: a metadata-only change
    is seen by its Last-Modified, which has whole seconds."""
    modified = s3.head_object(Bucket=BUCKET, Key=key)["LastModified"].timestamp()
    while time.time() < modified + 1.05:
        time.sleep(0.05)


def test_a_cold_listing_of_what_obsfs_wrote_needs_no_head(mounter: Mounter, logged: S3Server,
                                                          tmp_path: Path) -> None:
    s3 = boto_client(logged)
    s3.create_bucket(Bucket=BUCKET)
    first = mounter.mount(logged, BUCKET, "attr_index", "upload_delay=0.1", f"cache_dir={tmp_path / 'c1'}")
    w = first.path / "w"
    w.mkdir()
    for n in range(FILES):
        path = w / f"f{n}"
        path.write_bytes(b"x" * n)
        os.chmod(path, 0o600 + n)
        os.chown(path, 1000 + n, 2000 + n)
        os.utime(path, ns=(1_600_000_000_000_000_000 + n, 1_600_000_000_123_456_789 + n))
    os.symlink("f0", w / "link")
    os.mkfifo(w / "fifo", 0o640)
    (first.path / "e").mkdir()
    (first.path / "e" / "only").write_bytes(b"e")
    written = {name: shown(w / name) for name in os.listdir(w)}
    assert first.umount() == 0  # rewrites the pending indexes
    entries = index_of_before = index_of(s3, "w")
    assert sorted(entries) == sorted(written)
    assert entries["f3"]["meta"]["mode"] == str(stat.S_IFREG | 0o603)

    # Another client changes two files: a new body (new ETag), and new metadata only (a COPY
    # onto itself: same ETag and size, a later Last-Modified).
    s3.put_object(Bucket=BUCKET, Key="w/f0", Body=b"theirs",
                  Metadata={"mode": str(stat.S_IFREG | 0o444), "uid": "7", "gid": "8", "mtime": "1700000000"})
    after_the_second_of(s3, "w/f1")
    s3.copy_object(Bucket=BUCKET, Key="w/f1", CopySource={"Bucket": BUCKET, "Key": "w/f1"},
                   MetadataDirective="REPLACE",
                   Metadata={"mode": str(stat.S_IFREG | 0o404), "uid": "9", "gid": "9", "mtime": "1700000001"})

    before = len(headed(logged, f"/{BUCKET}/w/"))
    second = mounter.mount(logged, BUCKET, "attr_index", "upload_delay=0.1", f"cache_dir={tmp_path / 'c2'}")
    w = second.path / "w"
    now = {name: shown(w / name) for name in os.listdir(w)}
    assert sorted(headed(logged, f"/{BUCKET}/w/")[before:]) == [f"/{BUCKET}/w/f0", f"/{BUCKET}/w/f1"], \
        "only the files changed by another client are HEADed"
    assert now["f0"][:3] == (stat.S_IFREG | 0o444, 7, 8) and now["f0"][3] == len(b"theirs")
    assert now["f1"][:3] == (stat.S_IFREG | 0o404, 9, 9)
    assert {n: v for n, v in now.items() if n not in ("f0", "f1")} == \
        {n: v for n, v in written.items() if n not in ("f0", "f1")}
    assert stat.S_ISLNK(now["link"][0]) and stat.S_ISFIFO(now["fifo"][0])

    # Changes made here reach the index: a chmod, a removal, a rename, a directory emptied.
    os.chmod(w / "f5", 0o700)
    os.unlink(w / "f6")
    os.rename(w / "f7", w / "g7")
    os.unlink(second.path / "e" / "only")
    os.rmdir(second.path / "e")
    assert second.umount() == 0
    entries = index_of(s3, "w")
    assert "f6" not in entries and entries["f5"]["meta"]["mode"] == str(stat.S_IFREG | 0o700)
    moved = {name: value for name, value in entries["g7"]["meta"].items() if name != "ctime"}  # a rename's ctime
    assert "f7" not in entries and moved.items() <= index_of_before["f7"]["meta"].items()
    assert f"{INDEX_DIR}/e/index.json" not in keys(s3), "an index with no entry left is deleted"


def test_a_stale_or_broken_index_changes_nothing(mounter: Mounter, logged: S3Server) -> None:
    """Planted indexes that claim mode 0777 for files stored with 0600: an entry with another
    ETag, another size or another Last-Modified, another format version, and no JSON at all. A
    control entry that matches in every way is used (no HEAD), so each planted one is wrong in
    only the way it says."""
    s3 = boto_client(logged)
    s3.create_bucket(Bucket=BUCKET)
    stored = {"mode": str(stat.S_IFREG | 0o600), "uid": "1", "gid": "1", "mtime": "1700000000"}
    for name in ("right", "etag", "size", "modified", "version", "garbage"):
        s3.put_object(Bucket=BUCKET, Key=f"p/{name}/f", Body=b"stored", Metadata=stored)
    def index(name: str, version: int = 1, **wrong: int | str) -> None:
        """An index for ``p/name/`` whose entry for ``f`` matches it but for ``wrong``, and that
        claims another mode and owner unless it is the control."""
        info = s3.head_object(Bucket=BUCKET, Key=f"p/{name}/f")
        claimed = stored if name == "right" else dict(stored, mode=str(stat.S_IFREG | 0o777), uid="0")
        entry = {"etag": info["ETag"].strip('"'), "size": 6, "modified": int(info["LastModified"].timestamp()),
                 "type": info["ContentType"], "meta": claimed, **wrong}
        doc = {"format": "obsfs-attr-index", "version": version, "entries": {"f": entry}}
        s3.put_object(Bucket=BUCKET, Key=f"{INDEX_DIR}/p/{name}/index.json", Body=json.dumps(doc).encode())

    index("right")
    index("etag", etag="0" * 32)
    index("size", size=7)
    index("modified", modified=int(s3.head_object(Bucket=BUCKET, Key="p/modified/f")["LastModified"].timestamp()) - 1)
    index("version", version=2)
    s3.put_object(Bucket=BUCKET, Key=f"{INDEX_DIR}/p/garbage/index.json", Body=b'{"format": "obsfs-attr-in\xff')

    before = len(headed(logged, f"/{BUCKET}/p/"))
    mnt = mounter.mount(logged, BUCKET, "attr_index")
    assert os.listdir(mnt.path) == ["p"], "the index's place is not part of the tree"
    for name in ("right", "etag", "size", "modified", "version", "garbage"):
        assert os.listdir(mnt.path / "p" / name) == ["f"]
        assert shown(mnt.path / "p" / name / "f")[:3] == (stat.S_IFREG | 0o600, 1, 1), name
    assert sorted(path for path in headed(logged, f"/{BUCKET}/p/")[before:] if path.endswith("/f")) == \
        [f"/{BUCKET}/p/{name}/f" for name in ("etag", "garbage", "modified", "size", "version")]
    assert mnt.umount() == 0


def test_without_the_option_an_index_is_neither_shown_nor_written(mounter: Mounter, moto: S3Server,
                                                                    bucket: str) -> None:
    s3 = boto_client(moto)
    planted = f"{INDEX_DIR}/d/index.json"
    s3.put_object(Bucket=bucket, Key=planted, Body=b"{}")
    s3.put_object(Bucket=bucket, Key="d/old", Body=b"old")
    mnt = mounter.mount(moto, bucket)
    assert os.listdir(mnt.path) == ["d"], "its place is reserved with or without the option"
    (mnt.path / "d" / "f").write_bytes(b"f")
    (mnt.path / "e").mkdir()
    (mnt.path / "e" / "f").write_bytes(b"f")
    assert mnt.umount() == 0
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == \
        [planted, "d/f", "d/old", "e/", "e/f"]
    assert s3.get_object(Bucket=bucket, Key=planted)["Body"].read() == b"{}"


def test_a_listing_in_ranges_from_the_index_misses_and_repeats_nothing(mounter: Mounter, logged: S3Server) -> None:
    """An index names 1,100 files, so the listing's second half is asked for at once, from the
    960th name (listranges.py). Since the index was written, the store lost names (that very
    bound among them), gained some past it, 60 in the first range (more than its page holds), a
    subdirectory, a name with a space and an accent, and one past the last hint: the listing is
    still exactly the store's."""
    s3 = boto_client(logged)
    s3.create_bucket(Bucket=BUCKET)
    stored = {"mode": str(stat.S_IFREG | 0o640), "uid": "12", "gid": "34", "mtime": "1600000000"}
    hinted = [f"r/f{i:04d}" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=b"h", Metadata=stored), hinted))
    listed = [o for page in s3.get_paginator("list_objects").paginate(Bucket=BUCKET, Prefix="r/")
              for o in page["Contents"]]
    entries = {o["Key"][2:]: {"etag": o["ETag"].strip('"'), "size": 1, "modified": int(o["LastModified"].timestamp()),
                              "type": "binary/octet-stream", "meta": stored} for o in listed}
    doc = {"format": "obsfs-attr-index", "version": 1, "entries": entries}
    s3.put_object(Bucket=BUCKET, Key=f"{INDEX_DIR}/r/index.json", Body=json.dumps(doc).encode())
    gone = ["r/f0000", "r/f0500", "r/f0959", "r/f1099"]
    new = [*(f"r/f0500x{i:02d}" for i in range(60)), "r/f0959a", "r/f0960 é", "r/sub/inner", "r/f1099z"]
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key} for key in gone]})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=b"new"), new))

    mnt = mounter.mount(logged, BUCKET, "attr_index")
    names = os.listdir(mnt.path / "r")
    want = sorted({key[2:].split("/")[0] for key in hinted + new if key not in gone})
    assert sorted(names) == want and len(names) == len(want), "nothing missed, nothing twice"
    assert shown(mnt.path / "r" / "f0001")[:4] == (stat.S_IFREG | 0o640, 12, 34, 1)
    assert shown(mnt.path / "r" / "f0960 é")[3] == 3 and stat.S_ISDIR(shown(mnt.path / "r" / "sub")[0])
    assert mnt.umount() == 0
    assert logged.log_path is not None
    log = logged.log_path.read_text(errors="replace")
    lists = [parse_qs(query) for query in re.findall(r'"GET /attrindex\?(\S+) HTTP', log)]
    assert any(query.get("marker") == ["r/f0959"] and query.get("prefix") == ["r/"] for query in lists), \
        "the second range starts at the bound"
