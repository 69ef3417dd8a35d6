"""The secrets map as a StoreConfig (pure). Every error names the key, never the value."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.secrets import store_config

REF = "csi.storage.k8s.io/provisioner-secret-name"
VALUE = "s3cr3t-VALUE"
BASE = {"accessKeyID": "AKID", "secretAccessKey": VALUE, "endpoint": "https://obs.example.com"}


def test_minimal_secret() -> None:
    config = store_config(BASE, REF)
    assert (config.endpoint, config.access_key, config.secret_key) == ("https://obs.example.com", "AKID", VALUE)
    assert (config.region, config.signature, config.path_style) == ("us-east-1", "v4", False)
    assert VALUE not in repr(config)


def test_optional_keys_and_whitespace() -> None:
    config = store_config({"accessKeyID": "AKID\n", "secretAccessKey": f" {VALUE}\n",
                           "endpoint": "http://127.0.0.1:9000/", "region": "cn-north-4", "signature": "obs",
                           "usePathStyle": "true", "mounter": "s3fs"}, REF)
    assert (config.access_key, config.secret_key, config.endpoint) == ("AKID", VALUE, "http://127.0.0.1:9000")
    assert (config.region, config.signature, config.path_style) == ("cn-north-4", "obs", True)


def test_no_secrets_says_which_storageclass_key_to_set() -> None:
    with pytest.raises(InvalidArgument, match=REF):
        store_config({}, REF)


@pytest.mark.parametrize("key", ["accessKeyID", "secretAccessKey", "endpoint"])
def test_missing_key_is_named(key: str) -> None:
    secrets = {k: v for k, v in BASE.items() if k != key}
    with pytest.raises(InvalidArgument, match=f"lacks key\\(s\\) {key}") as info:
        store_config(secrets, REF)
    assert VALUE not in str(info.value)


@pytest.mark.parametrize("key, value", [
    ("endpoint", "obs.example.com"), ("endpoint", "ftp://obs.example.com"),
    ("endpoint", f"https://user:{VALUE}@obs.example.com"), ("endpoint", f"https://obs.example.com/{VALUE}"),
    ("signature", VALUE), ("usePathStyle", VALUE),
])
def test_bad_value_names_the_key_only(key: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=f"secret key {key}") as info:
        store_config({**BASE, key: value}, REF)
    assert VALUE not in str(info.value)
