"""keepalive.py signs and reads HEADs and small PUTs exactly as the SDK does: checked against the SDK's own code."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
from obs import auth, client, convertor  # type: ignore[import-untyped]

from obsfs.backend.keepalive import Signer, _read_answer, header_map, object_path, put_headers

KEYS = ["plain", "a b/ü+%41~x", "dir/", "*'()!$&,;=@:"]
NOW = 1_790_000_000.0


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dialect", ["v2", "obs"])
@pytest.mark.parametrize("path_style", [True, False])
def test_v2_and_obs_signatures_match_the_sdk(key: str, dialect: str, path_style: bool) -> None:
    host = "127.0.0.1:9000" if path_style else "bkt.obs.example.com"
    signer = Signer(dialect, "AK", "SK/secret+", "region-1", host, bucket_in_path=path_style)
    path, headers = signer.headers("HEAD", "bkt", key, NOW)
    sdk = auth.Authentication("AK", "SK/secret+", path_style, convertor.Adapter(dialect), "obs.example.com", False)
    expected = sdk.doAuth("HEAD", "bkt", key, None, {"Host": host, "Date": email.utils.formatdate(NOW, usegmt=True)})
    assert headers["Authorization"] == expected["Authorization"]
    assert path == (f"/bkt/{object_path(key)}" if path_style else f"/{object_path(key)}")


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("path_style", [True, False])
def test_v4_signature_matches_the_sdk(key: str, path_style: bool) -> None:
    host = "127.0.0.1:9000" if path_style else "bkt.s3.example.com"
    signer = Signer("v4", "AK", "SK/secret+", "region-1", host, bucket_in_path=path_style)
    _, headers = signer.headers("HEAD", "bkt", key, NOW)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW))
    sdk = auth.V4Authentication("AK", "SK/secret+", "region-1", stamp[:8], stamp, path_style,
                                convertor.Adapter("v4"))
    expected = sdk.doAuth("HEAD", "bkt", key, {}, {"Host": host, "x-amz-date": stamp})
    assert headers["Authorization"] == expected["Authorization"]
    assert headers["x-amz-date"] == stamp


def test_without_keys_requests_are_anonymous() -> None:
    for dialect in ("v2", "obs", "v4"):
        _, headers = Signer(dialect, "", "", "r", "h", bucket_in_path=True).headers("HEAD", "b", "k", NOW)
        assert "Authorization" not in headers


def test_answer_headers_read_like_the_sdk() -> None:
    raw = {"Content-Length": "5", "ETag": '"e"', "Last-Modified": "Mon, 23 Nov 2026 17:37:21 GMT",
           "x-amz-meta-mode": "33188", "x-amz-meta-Note": "a%41b%C3%A9", "x-obs-meta-uid": "7",
           "x-amz-request-id": "tx1", "x-obs-api": "3.0", "Accept-Ranges": "bytes", "X-RGW-Object-Type": "Normal",
           "Content-Type": "text/plain"}
    lower = {name.lower(): value for name, value in raw.items()}
    assert header_map(list(raw.items())) == dict(client.ObsClient._rename_response_headers(client.ObsClient, lower))
    assert header_map(raw)["note"] == "aAbé"


PUT_META = {"mode": "33188", "uid": "0", "note": "a b;c/ü'*%41", "mtime": "1790000000.5"}
PUT_CONDITIONS = [{}, {"If-None-Match": "*"}, {"If-Match": "0123abcd"}]


@pytest.mark.parametrize("dialect", ["v2", "obs", "v4"])
@pytest.mark.parametrize("conditions", PUT_CONDITIONS)
def test_put_headers_are_the_sdks(dialect: str, conditions: dict[str, str]) -> None:
    """What a small PUT sends is what the SDK's putFile sends: names, prefixes and coding."""
    # Virtual-host style: with path style the SDK speaks v2 whatever it was told.
    sdk = client.ObsClient(access_key_id="AK", secret_access_key="SK", server="http://obs.example.com",
                           signature=dialect, path_style=False, is_signature_negotiation=False)
    built = sdk.convertor.trans_put_object(metadata=dict(PUT_META),
                                           headers=client.PutObjectHeader(contentType="text/x-odd; a=b"))
    built["Content-Length"] = "42"
    expected = sdk._rename_request_headers(built, dict(conditions), "PUT")
    prefix = "x-obs-" if dialect == "obs" else "x-amz-"
    assert put_headers(prefix, "text/x-odd; a=b", 42, PUT_META, conditions) == expected


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dialect", ["v2", "obs"])
@pytest.mark.parametrize("conditions", PUT_CONDITIONS)
def test_v2_and_obs_put_signatures_match_the_sdk(key: str, dialect: str, conditions: dict[str, str]) -> None:
    host = "127.0.0.1:9000"
    signer = Signer(dialect, "AK", "SK/secret+", "region-1", host, bucket_in_path=True)
    extra = put_headers(signer.prefix, "text/plain", 5, PUT_META, conditions)
    _, headers = signer.headers("PUT", "bkt", key, NOW, extra)
    sdk = auth.Authentication("AK", "SK/secret+", True, convertor.Adapter(dialect), "obs.example.com", False)
    expected = sdk.doAuth("PUT", "bkt", key, None,
                          {"Host": host, "Date": email.utils.formatdate(NOW, usegmt=True), **extra})
    assert headers["Authorization"] == expected["Authorization"]
    assert {name: headers[name] for name in extra} == extra


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("conditions", PUT_CONDITIONS)
def test_v4_put_signature_matches_the_sdk(key: str, conditions: dict[str, str]) -> None:
    host = "127.0.0.1:9000"
    signer = Signer("v4", "AK", "SK/secret+", "region-1", host, bucket_in_path=True)
    extra = put_headers(signer.prefix, "text/plain", 5, PUT_META, conditions)
    _, headers = signer.headers("PUT", "bkt", key, NOW, extra)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW))
    sdk = auth.V4Authentication("AK", "SK/secret+", "region-1", stamp[:8], stamp, True, convertor.Adapter("v4"))
    expected = sdk.doAuth("PUT", "bkt", key, {}, {"Host": host, "x-amz-date": stamp, **extra})
    assert headers["Authorization"] == expected["Authorization"]


@pytest.mark.parametrize("answer, body, reusable", [
    (b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n", b"", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", b"body", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
     b"4\r\nbody\r\n0\r\n\r\n", False),
])
def test_answers_end_where_their_framing_says(answer: bytes, body: bytes, reusable: bool) -> None:
    """An answer is read up to its end and no further, on a connection the server keeps open: a
    204 has no body whatever its headers say; reading on would wait for the socket's timeout."""
    ours, server = socket.socketpair()
    with ours, server:
        ours.settimeout(5)  # a failure of this test, not a measurement
        server.sendall(answer)
        status, _, keep, data = _read_answer(ours, has_body=True)
        assert (status, data, keep) == (int(answer[9:12]), body, reusable)
