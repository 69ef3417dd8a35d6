"""Bucket names from volume names, and volume ids (pure)."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.naming import VolumeRef, bucket_problem, label_for, parse_volume_id

ODD_NAMES = ["PVC-1", "ab", "a" * 200, "日本語", "xn--abc", "sthree-x", "---", "my_vol.name", "Vol--A",
             "a" * 63 + "-", "trailing-s3alias", "with space", "pvc-\u00e9t\u00e9"]


def test_a_valid_name_is_used_as_is() -> None:
    name = "pvc-3f2a6c1e-8b1d-4f7a-9d2e-0c1b2a3d4e5f"
    assert label_for(name) == name


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_become_valid_bucket_names(name: str) -> None:
    label = label_for(name)
    assert bucket_problem(label) is None
    assert 3 <= len(label) <= 63 and "." not in label
    assert label == label_for(name)  # deterministic: a retried CreateVolume finds its bucket


def test_names_that_normalise_alike_stay_apart() -> None:
    labels = {label_for(n) for n in ["pvc-1", "PVC-1", "pvc_1", "pvc.1"]}
    assert len(labels) == 4


@pytest.mark.parametrize("bucket", ["B", "ab", "a" * 64, "-ab", "ab-", "a..b", "a.-b", "192.168.1.1",
                                    "xn--ab", "ab-s3alias", "a_b"])
def test_invalid_bucket_names_are_explained(bucket: str) -> None:
    problem = bucket_problem(bucket)
    assert problem and repr(bucket) in problem


@pytest.mark.parametrize("volume_id, bucket, prefix", [
    ("bucket", "bucket", ""),
    ("my.bucket", "my.bucket", ""),
    ("bucket/vol", "bucket", "vol"),
    ("bucket/team/vol/", "bucket", "team/vol"),
])
def test_volume_ids(volume_id: str, bucket: str, prefix: str) -> None:
    ref = parse_volume_id(volume_id)
    assert ref == VolumeRef(bucket, prefix)
    assert parse_volume_id(ref.volume_id) == ref
    assert ref.key_prefix == (f"{prefix}/" if prefix else "")


@pytest.mark.parametrize("volume_id", ["", "Bucket", "bucket//x", "bucket/../x", "bucket/./x", "bucket/a\nb",
                                       "bucket/" + "x" * 600])
def test_invalid_volume_ids(volume_id: str) -> None:
    with pytest.raises(InvalidArgument, match="is not BUCKET or BUCKET/PREFIX"):
        parse_volume_id(volume_id)
