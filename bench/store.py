"""The raw esdk-obs-python client: bucket setup, durability checks, verification and the "sdk" peer.

It is the reference every mount is compared against, so it uses the SDK's fastest plain paths:
putFile from a file (putContent formats large payloads into a debug string) and a streamed GET read
with ``readinto`` into one reused buffer. One client per thread, since the bench fans out over threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from obs import DeleteObjectsRequest, Object, ObsClient, PutObjectHeader

from bench.errors import StoreError
from bench.rgw import Endpoint

CHUNK = 1 << 20
DIR_MODE = 0o040755  # s3fs's format: x-amz-meta-mode holds the decimal st_mode


class Store:
    def __init__(self, endpoint: Endpoint, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._local = threading.local()
        self._clients: list[ObsClient] = []
        self._lock = threading.Lock()

    @property
    def client(self) -> ObsClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = ObsClient(access_key_id=self.endpoint.access_key, secret_access_key=self.endpoint.secret_key,
                               server=self.endpoint.url, signature="v2", path_style=True)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def _check(self, resp: Any, what: str) -> Any:
        if resp.status >= 300:
            raise StoreError(f"{what}: HTTP {resp.status} {resp.errorCode or ''} {resp.errorMessage or ''}".strip())
        return resp

    def create_bucket(self) -> None:
        self._check(self.client.createBucket(self.bucket), f"create bucket {self.bucket}")

    def put_file(self, key: str, path: Path) -> None:
        headers = PutObjectHeader(contentType="application/octet-stream")
        self._check(self.client.putFile(self.bucket, key, str(path), headers=headers), f"put {key}")

    def put_small(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        headers = PutObjectHeader(contentType="application/octet-stream")
        self._check(self.client.putContent(self.bucket, key, data, metadata=metadata, headers=headers), f"put {key}")

    def put_dir_marker(self, key: str) -> None:
        """A ``dir/`` marker in s3fs's format, so every peer sees the same directory with the same mode."""
        headers = PutObjectHeader(contentType="application/x-directory")
        resp = self.client.putContent(self.bucket, key, b"", metadata={"mode": str(DIR_MODE)}, headers=headers)
        self._check(resp, f"put {key}")

    def head_size(self, key: str) -> int | None:
        resp = self.client.getObjectMetadata(self.bucket, key)
        if resp.status == 404:
            return None
        return int(self._check(resp, f"head {key}").body.contentLength)

    def list_sizes(self, prefix: str) -> dict[str, int]:
        sizes: dict[str, int] = {}
        marker: str | None = None
        while True:
            resp = self._check(self.client.listObjects(self.bucket, prefix=prefix, marker=marker, max_keys=1000),
                               f"list {prefix}")
            for entry in resp.body.contents or []:
                sizes[entry.key] = int(entry.size)
            if not resp.body.is_truncated or not resp.body.contents:
                return sizes
            marker = resp.body.next_marker or resp.body.contents[-1].key

    def any_under(self, prefix: str) -> bool:
        """One LIST of one key: cheap enough to poll while a peer is still deleting thousands."""
        resp = self._check(self.client.listObjects(self.bucket, prefix=prefix, max_keys=1), f"list {prefix}")
        return bool(resp.body.contents)

    def read(self, key: str, sink: Callable[[memoryview], object] | None = None) -> int:
        """Stream the object once; the byte count is ours because ``readinto`` does not check EOF."""
        resp = self._check(self.client.getObject(self.bucket, key, loadStreamInMemory=False), f"get {key}")
        stream = resp.body.response
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        total = 0
        try:
            while n := stream.readinto(view):
                total += n
                if sink is not None:
                    sink(view[:n])
        finally:
            stream.close()
        return total

    def sha256(self, key: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = self.read(key, digest.update)
        return size, digest.hexdigest()

    def delete_key(self, key: str) -> None:
        self._check(self.client.deleteObject(self.bucket, key), f"delete {key}")

    def delete_keys(self, keys: Iterable[str]) -> None:
        pending = list(keys)
        for start in range(0, len(pending), 1000):  # RGW refuses more than 1000 per call
            request = DeleteObjectsRequest(quiet=True, objects=[Object(key=k) for k in pending[start:start + 1000]])
            resp = self._check(self.client.deleteObjects(self.bucket, request), "delete objects")
            errors = resp.body.error or []
            if errors:
                raise StoreError(f"delete objects: {errors[0].key}: {errors[0].code}")

    def delete_prefix(self, prefix: str) -> None:
        self.delete_keys(self.list_sizes(prefix))

    def fan_out(self, work: Callable[[str], object], keys: list[str], threads: int = 16) -> None:
        """Run ``work`` for each key in parallel threads; the first error is raised."""
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work, key) for key in keys]:
                future.result()
