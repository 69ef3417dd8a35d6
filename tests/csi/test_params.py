"""StorageClass parameters against the allow-list (pure)."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.params import MOUNT_OPTIONS, parse_parameters
from obsfs.options import PARSERS


def test_allow_list_names_real_obsfs_options() -> None:
    assert set(MOUNT_OPTIONS) <= set(PARSERS)


def test_no_parameters() -> None:
    params = parse_parameters({})
    assert params.shared_bucket is None and params.mount_options == {}


def test_options_are_kept_under_their_obsfs_names() -> None:
    params = parse_parameters({"uid": "1000", "attr_timeout": "2.5", "connect_timeout": "10", "bucket": "shared",
                               "csi.storage.k8s.io/pvc/name": "data"})
    assert params.shared_bucket == "shared"
    assert params.mount_options == {"uid": "1000", "attr_timeout": "2.5", "readwrite_timeout": "10"}


@pytest.mark.parametrize("key", ["colour", "url", "passwd_file", "cache_dir", "allow_other", "ro", "sigv"])
def test_keys_outside_the_allow_list_are_named(key: str) -> None:
    with pytest.raises(InvalidArgument, match=f"unknown StorageClass parameter '{key}'"):
        parse_parameters({key: "x"})


@pytest.mark.parametrize("key, value", [("uid", "-1"), ("uid", "root"), ("umask", "999"), ("attr_timeout", "soon"),
                                        ("multipart_size", "1"), ("dbglevel", "loud")])
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=f"StorageClass parameter '{key}': "):
        parse_parameters({key: value})


def test_shared_bucket_name_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="parameter 'bucket': 'Shared_Bucket' is not a valid bucket name"):
        parse_parameters({"bucket": "Shared_Bucket"})
