"""StorageClass placement rules, without a store: what ``prefix`` and ``pathPattern`` accept and
what a claim's metadata expands them to."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.params import parse_parameters
from csi.pathpattern import PV_NAME, PVC_NAME, PVC_NAMESPACE, VolumePath, check_pattern, claim_of, parse_root

CLAIM = {PVC_NAMESPACE: "team-a", PVC_NAME: "data", PV_NAME: "pvc-1234"}
NS_NAME = "${pvc.metadata.namespace}/${pvc.metadata.name}"


def test_a_pattern_expands_below_the_root() -> None:
    path = VolumePath("teams/a", check_pattern(NS_NAME, "pathPattern"))
    assert path.prefix_for("pvc-1234", CLAIM) == "teams/a/team-a/data"
    assert VolumePath("", "vols/${pv.metadata.name}").prefix_for("pvc-1234", CLAIM) == "vols/pvc-1234"


def test_without_a_pattern_the_volume_name_goes_below_the_root() -> None:
    assert VolumePath("teams/a").prefix_for("pvc-1234", {}) == "teams/a/pvc-1234"
    assert VolumePath().prefix_for("pvc-1234", {}) == "pvc-1234"


def test_the_root_loses_its_end_slashes_and_must_be_a_valid_prefix() -> None:
    assert parse_root("/teams/a/", "prefix") == "teams/a"
    for bad in ("teams//a", "teams/../a", "a/\x01"):
        with pytest.raises(InvalidArgument, match="'prefix'"):
            parse_root(bad, "prefix")


@pytest.mark.parametrize("pattern, message", [
    ("${pvc.metadata.uid}", r"unknown variable \$\{pvc.metadata.uid\}"),
    ("${pvc.spec.volumeName}/x", "unknown variable"),
    ("fixed", "names no variable"),
    ("${pvc.metadata.name}//x", "empty, '.' or '..'"),
    ("../${pvc.metadata.name}", "empty, '.' or '..'"),
    ("$HOME/${pvc.metadata.name}", "a \\$ that does not start"),
])
def test_bad_patterns_are_refused_when_parsed(pattern: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_pattern(pattern, "pathPattern")


def test_missing_metadata_says_which_flag_to_turn_on() -> None:
    path = VolumePath("", NS_NAME)
    with pytest.raises(InvalidArgument, match="--extra-create-metadata"):
        path.prefix_for("pvc-1234", {PVC_NAME: "data"})


def test_a_result_too_long_for_a_key_names_the_claim() -> None:
    claim = {**CLAIM, PVC_NAME: "d" * 253}
    path = VolumePath("r" * 300, NS_NAME)
    with pytest.raises(InvalidArgument, match="PVC team-a/d+: .* longer than 512 bytes"):
        path.prefix_for("pvc-1234", claim)


def test_placement_needs_a_shared_bucket() -> None:
    for key, value in (("prefix", "teams/a"), ("pathPattern", NS_NAME)):
        with pytest.raises(InvalidArgument, match=f"'{key}' places volumes in a shared bucket: set 'bucket'"):
            parse_parameters({key: value})
    params = parse_parameters({"bucket": "shared", "prefix": "teams/a", "pathPattern": NS_NAME, "uid": "1"})
    assert params.path == VolumePath("teams/a", NS_NAME)
    assert params.mount_options == {"uid": "1"}  # placement is not a mount option: not in the volume context


def test_claim_of() -> None:
    assert claim_of(CLAIM) == "team-a/data"
    assert claim_of({PVC_NAME: "data"}) == ""
