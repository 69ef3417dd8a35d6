"""Where the requests for one bucket go and how they are signed, decided as the SDK's ObsClient
decides it, without importing the SDK.

The SDK (with requests, urllib3 and pycryptodome) is about 0.1 s of imports, the largest part of
a daemon's start. The mount's first answers (the bucket check, the root's listing, HEADs) go
through ``keepalive.py``, which needs only this; the SDK is imported when a call first needs it
(``obs.ObsStore.client``). ``tests/unit/test_addressing.py`` holds this to the SDK's own
attributes for each kind of endpoint.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlparse

from obsfs.backend.base import StoreConfig

# The SDK's test for an IP address (IPv4 only), which turns on path style by itself.
_IPV4 = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")


@dataclass(frozen=True)
class Addressing:
    server: str  # the endpoint's host, without the bucket
    host: str  # the host connected to: the server, or bucket.server in virtual-host style
    port: int
    path_style: bool
    dialect: str  # the signature: "v2", "v4" or "obs"
    negotiate: bool  # "obs" on a host name: ask the server once which dialect it speaks
    region: str
    tls: ssl.SSLContext | None

    @property
    def host_header(self) -> str:
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"


def addressing(config: StoreConfig, bucket: str, ssl_verify: bool | str) -> Addressing:
    """What ``ObsClient(server=config.endpoint, signature=..., region=..., path_style=...,
    ssl_verify=ssl_verify, is_signature_negotiation=config.signature == "obs")`` settles on."""
    parsed = urlparse(config.endpoint)
    hostname = parsed.netloc if parsed.netloc.strip() else parsed.path
    if not hostname.strip():
        raise ValueError("server is not set correctly")
    secure = {"https": True, "http": False}.get(parsed.scheme, True)
    server, _, port_text = hostname.partition(":")
    port = int(port_text) if port_text else (443 if secure else 80)
    path_style = bool(_IPV4.match(server)) or config.path_style
    dialect = config.signature
    negotiate = config.signature == "obs"
    if path_style:
        negotiate = False
        dialect = "v2" if dialect == "obs" else dialect
    return Addressing(server=server, host=server if path_style else f"{bucket}.{server}", port=port,
                      path_style=path_style, dialect=dialect, negotiate=negotiate, region=str(config.region),
                      tls=tls_context(ssl_verify) if secure else None)


def tls_context(ssl_verify: bool | str) -> ssl.SSLContext:
    """The SDK's TLS context: no SSLv2/3, no host name check; verified against the CA file
    ``ssl_verify`` names (if it exists), or not verified at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3
    if ssl_verify:
        context.options |= ssl.OP_NO_COMPRESSION
        context.verify_mode = ssl.CERT_REQUIRED
        cafile = str(ssl_verify)
        if os.path.isfile(cafile):
            context.load_verify_locations(cafile)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
