"""addressing.py decides what the SDK's ObsClient decides, without importing the SDK."""

from __future__ import annotations

import warnings

import pytest

from obsfs.backend.addressing import addressing
from obsfs.backend.base import StoreConfig

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize(("endpoint", "signature", "path_style", "ssl_verify"), [
    ("http://127.0.0.1:9000", "v2", False, False),  # an IP address: path style whatever was asked
    ("http://127.0.0.1:9000", "obs", True, False),
    ("https://obs.example.com", "obs", False, CA_BUNDLE),  # OBS: virtual host, negotiated
    ("https://obs.example.com", "obs", True, False),  # path style: no negotiation, v2
    ("obs.example.com:8443", "v4", False, False),  # no scheme: TLS, as the SDK assumes
    ("http://s3.local", "v4", True, False),
    ("https://10.0.0.1", "v2", False, "/no/such/ca.pem"),
])
def test_as_the_sdk_decides(endpoint: str, signature: str, path_style: bool, ssl_verify: bool | str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK's PROTOCOL_SSLv23
        from obs import ObsClient  # type: ignore[import-untyped]

        sdk = ObsClient(access_key_id="a", secret_access_key="b", server=endpoint, signature=signature,
                        region="r1", path_style=path_style, ssl_verify=ssl_verify, max_retry_count=0, timeout=5,
                        is_signature_negotiation=signature == "obs")
    config = StoreConfig(endpoint=endpoint, signature=signature, path_style=path_style, region="r1")
    ours = addressing(config, "bkt", ssl_verify)
    assert (ours.server, ours.host, ours.port, ours.path_style, ours.dialect, ours.negotiate, ours.region) == (
        sdk.server, sdk.calling_format.get_server(sdk.server, "bkt"), sdk.port, bool(sdk.path_style),
        sdk.signature, bool(sdk.is_signature_negotiation), str(sdk.region))
    if sdk.context is None:
        assert ours.tls is None
    else:
        assert ours.tls is not None
        for name in ("options", "verify_mode", "check_hostname", "minimum_version", "maximum_version"):
            assert getattr(ours.tls, name) == getattr(sdk.context, name), name
        assert ours.tls.cert_store_stats() == sdk.context.cert_store_stats()
