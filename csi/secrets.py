"""The request's secrets map, as a ``StoreConfig``.

The keys are the ones ctrox/csi-s3 users already have in their Secrets (``accessKeyID``,
``secretAccessKey``, ``endpoint``, ``region``), plus optional ``signature`` (obs, v2 or v4) and
``usePathStyle`` (true or false). Keys we do not know are ignored: the CO may pass one Secret to
every RPC, and csi-s3 Secrets carry keys of their own. Every error names the key at fault and
never the value; values are stripped of surrounding whitespace, which ``echo`` into a Secret
file so often adds and which no access key, URL or region contains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from csi.errors import InvalidArgument
from obsfs.backend.base import StoreConfig
from obsfs.options import PARSERS

ACCESS_KEY = "accessKeyID"
SECRET_KEY = "secretAccessKey"
ENDPOINT = "endpoint"
REGION = "region"
SIGNATURE = "signature"
PATH_STYLE = "usePathStyle"
REQUIRED = (ACCESS_KEY, SECRET_KEY, ENDPOINT)


def store_config(secrets: Mapping[str, str], secret_ref: str) -> StoreConfig:
    """Build the store config; ``secret_ref`` names the StorageClass key that should supply the
    Secret for this RPC (e.g. ``csi.storage.k8s.io/provisioner-secret-name``), for the message."""
    values = {key: value.strip() for key, value in secrets.items()}
    missing = [key for key in REQUIRED if not values.get(key)]
    if len(missing) == len(REQUIRED):
        raise InvalidArgument(f"the request carries no store secrets: set {secret_ref} (and its -namespace) "
                              f"to a Secret with keys {', '.join(REQUIRED)}, or give the driver a default "
                              "credential (obsfs-csi --credentials)")
    if missing:
        raise InvalidArgument(f"the Secret lacks key(s) {', '.join(missing)}")
    endpoint = values[ENDPOINT]
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname or url.username or url.path not in ("", "/") \
            or url.query or url.fragment:
        raise InvalidArgument(f"secret key {ENDPOINT} must be a URL like https://obs.example.com "
                              "(scheme and host, optional port, no path)")
    config: dict[str, Any] = {}
    for key, option, field in ((SIGNATURE, "signature", "signature"),
                               (PATH_STYLE, "use_path_request_style", "path_style")):
        if key in values:
            try:
                config[field] = PARSERS[option](values[key])
            except ValueError as exc:
                raise InvalidArgument(f"secret key {key}: {exc}") from None
    if values.get(REGION):
        config["region"] = values[REGION]
    return StoreConfig(endpoint=endpoint.rstrip("/"), access_key=values[ACCESS_KEY],
                       secret_key=values[SECRET_KEY], **config)
