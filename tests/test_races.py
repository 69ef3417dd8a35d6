"""Races inside one mount's write-back queue: names replaced, removed and listed while their
uploads wait or run. Each test makes the race likelier (no upload delay, tight loops, a writer
that never pauses) instead of waiting it out."""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.mounting import Mounter
from tests.s3server import S3Server

DELAYS = ["0", "0.5", "2"]


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def body(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


@pytest.mark.parametrize("delay", DELAYS)
def test_replacing_a_name_again_within_upload_delay(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                                   delay: str) -> None:
    """An editor's or git's atomic save, repeated: each replacement is based on the one before it,
    not on what the store held when the mount last asked, so none is taken for a foreign change."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"stored before the mount")
    mnt = mounter.mount(moto, bucket, f"upload_delay={delay}")
    for version in range(25):
        (mnt.path / "a.tmp").write_bytes(f"version {version}".encode())
        os.rename(mnt.path / "a.tmp", mnt.path / "a")
        assert (mnt.path / "a").read_bytes() == f"version {version}".encode()
    assert mnt.umount() == 0
    assert keys(s3, bucket) == ["a"], "a conflict copy or a leftover temporary name"
    assert body(s3, bucket, "a") == b"version 24"


@pytest.mark.parametrize("delay", DELAYS)
def test_replacing_then_removing_a_name_within_upload_delay(mounter: Mounter, moto: S3Server, bucket: str,
                                                           s3: Any, delay: str) -> None:
    """The stored object that a replacement was waiting to overwrite is removed with the name."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"old")
    s3.put_object(Bucket=bucket, Key="b", Body=b"old")
    mnt = mounter.mount(moto, bucket, f"upload_delay={delay}")
    (mnt.path / "a.tmp").write_bytes(b"new")
    os.rename(mnt.path / "a.tmp", mnt.path / "a")
    os.unlink(mnt.path / "a")
    for version in range(3):  # twice replaced, then removed
        (mnt.path / "b.tmp").write_bytes(f"new {version}".encode())
        os.rename(mnt.path / "b.tmp", mnt.path / "b")
    os.unlink(mnt.path / "b")
    assert os.listdir(mnt.path) == []
    assert mnt.umount() == 0
    assert keys(s3, bucket) == []
    again = mounter.mount(moto, bucket)
    assert os.listdir(again.path) == []


def test_a_listing_shows_files_whose_upload_ends_meanwhile(mounter: Mounter, moto: S3Server, bucket: str,
                                                           s3: Any) -> None:
    """Every file closed before opendir is in the listing, whether its upload ended before, during
    or after the LIST pages were fetched. Three pages of keys sort after the new names, so a new
    file's page is fetched first, and the listing takes longer than the upload delay: files that
    wait for it when the listing starts are uploaded while the rest is listed."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=bucket, Key=f"d/m-{n:05d}", Body=b""), range(3000)))
    mnt = mounter.mount(moto, bucket, "upload_delay=0.2")
    directory = mnt.path / "d"
    closed: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            number = 0
            while not stop.is_set():
                name = f"a-{number:05d}"
                (directory / name).write_bytes(b"x")
                closed.append(name)
                number += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    missed = []
    try:
        for _ in range(15):
            before = set(closed)
            listed = set(os.listdir(directory))
            missed.append(sorted(before - listed))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert closed, "the writer wrote nothing"
    assert not any(missed), f"listings missed files closed before they started: {[m for m in missed if m]}"
    assert set(os.listdir(directory)) == set(closed) | {f"m-{n:05d}" for n in range(3000)}
    assert mnt.umount() == 0
    assert set(keys(s3, bucket, "d/a-")) == {f"d/{name}" for name in closed}


@pytest.mark.parametrize("delay", ["0", "0.5"])
def test_churn_matches_what_writers_were_told(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                              delay: str) -> None:
    """8 writers create, overwrite, replace by rename and delete names, 2 listers list all along;
    after unmount the store holds exactly what the writers' acknowledged calls left, no more
    (nothing deleted comes back, no conflict copy) and no less. Each writer has names of its own,
    so its model needs no ordering with the others; all share one directory and one queue."""
    mnt = mounter.mount(moto, bucket, f"upload_delay={delay}")
    root = mnt.path / "churn"
    root.mkdir()
    models: list[dict[str, bytes]] = [{} for _ in range(8)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        rng = random.Random(number)
        model = models[number]
        names = [f"w{number}-{n}" for n in range(6)]
        (root / f"w{number}-stable").write_bytes(b"stable")
        model[f"w{number}-stable"] = b"stable"
        for step in range(60):
            name = rng.choice(names)
            data = f"{number}/{step}".encode()
            action = rng.choice(["write", "replace", "delete", "move"])
            if action == "write":
                (root / name).write_bytes(data)
                model[name] = data
            elif action == "replace":  # an atomic save: temporary name, then rename over
                (root / f".{name}.tmp").write_bytes(data)
                os.rename(root / f".{name}.tmp", root / name)
                model[name] = data
            elif action == "delete" and name in model:
                os.unlink(root / name)
                del model[name]
            elif action == "move" and name in model:
                other = rng.choice([n for n in names if n != name])
                os.rename(root / name, root / other)
                model[other] = model.pop(name)

    def run(target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def lister() -> None:
        while not stop.is_set():
            created = {f"w{n}-stable" for n, model in enumerate(models) if f"w{n}-stable" in model}
            missed = created - set(os.listdir(root))
            if missed:
                raise AssertionError(f"a listing lost files that never changed: {sorted(missed)}")

    writers = [threading.Thread(target=run, args=(writer, n)) for n in range(8)]
    listers = [threading.Thread(target=run, args=(lister,)) for _ in range(2)]
    for thread in writers + listers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in listers:
        thread.join()
    assert not errors, errors
    expected = {f"churn/{name}": data for model in models for name, data in model.items()}
    assert {name: (root / name).read_bytes() for name in os.listdir(root)} == \
        {key.split("/", 1)[1]: data for key, data in expected.items()}
    assert mnt.umount() == 0
    stored = {key: body(s3, bucket, key) for key in keys(s3, bucket, "churn/") if key != "churn/"}
    assert stored == expected
