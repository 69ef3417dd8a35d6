"""The bench's pure parts: tree layout, the attribute check of ls -l, ratios, targets and the table.

The bench itself runs for minutes against RGW (scripts/bench.sh --quick) and is no test; these
check what it computes from its samples, so that a number in its table means what its label says.
"""

from __future__ import annotations

import stat
from collections import Counter
from pathlib import Path

import pytest

from bench.attrs import FIELDS, LISTED, Attrs, mismatches, parse_ls
from bench.layout import flat_names, leaf_dirs, tree_names
from bench.metrics import BY_KEY, SDK, WORKLOADS, Results, ratio
from bench.profile import FULL, QUICK, Profile
from bench.report import ratio_columns, table
from bench.run import parse_args
from bench.targets import TARGETS, judge
from bench.workloads import ls_long, write_owned

PEERS = ["obsfs", "s3fs", "rclone", SDK]


@pytest.mark.parametrize("profile", [FULL, QUICK], ids=lambda p: p.name)
def test_tree_fills_every_leaf_two_levels_down(profile: Profile) -> None:
    names = tree_names(profile.tree_fanout, profile.tree_files)
    assert len(set(names)) == profile.tree_files
    per_leaf = Counter(name.rsplit("/", 1)[0] for name in names)
    assert sorted(per_leaf) == sorted(leaf_dirs(profile.tree_fanout))
    assert len(per_leaf) == profile.tree_dirs
    assert all(name.count("/") == 2 for name in names)
    assert max(per_leaf.values()) - min(per_leaf.values()) <= 1


def test_full_tree_is_the_one_of_issue_16() -> None:
    per_leaf = Counter(name.rsplit("/", 1)[0] for name in tree_names(32, 6400))
    assert len(per_leaf) == 1024
    assert set(per_leaf.values()) == {6, 7}
    assert len({name.split("/", 1)[0] for name in per_leaf}) == 32


def test_tree_refuses_empty_leaves() -> None:
    with pytest.raises(ValueError, match="16 leaf"):
        tree_names(4, 15)


def test_flat_names_sort_as_created() -> None:
    names = flat_names(1000)
    assert names == sorted(names) and len(set(names)) == 1000


LS_OUT = """total 8
-rw-r----- 1 1234 2345 16 1000000000 f00000
-rw-r-----. 1 1234 2345 16 1000000000 f00001
-rw-r--r-- 1 0 0 16 1765000000 f00002
"""


def test_parse_ls_reads_numeric_owner_and_seconds() -> None:
    entries = parse_ls(LS_OUT)
    assert [e.name for e in entries] == ["f00000", "f00001", "f00002"]
    assert entries[1].mode == stat.filemode(LISTED.mode)  # the SELinux dot is no mode bit
    assert (entries[0].uid, entries[0].gid, entries[0].size, entries[0].mtime) == (1234, 2345, 16, 1_000_000_000)


def test_mismatches_name_each_wrong_field() -> None:
    wrong = mismatches(parse_ls(LS_OUT), LISTED, FIELDS)
    assert len(wrong) == 1
    assert wrong[0].startswith("f00002:")
    assert "mode -rw-r--r--" in wrong[0] and "owner 0:0" in wrong[0] and "mtime 1765000000" in wrong[0]
    assert "size" not in wrong[0]


def test_mismatches_check_only_what_a_peer_keeps() -> None:
    entries = parse_ls(LS_OUT)
    assert mismatches(entries, Attrs(LISTED.mode, 0, 0, 16, 1765000000), frozenset({"size"})) == []
    assert len(mismatches(entries, LISTED, frozenset({"size", "mtime"}))) == 1


def test_listed_metadata_is_s3fs_format() -> None:
    assert LISTED.metadata() == {"mode": "33184", "uid": "1234", "gid": "2345", "mtime": "1000000000"}


def test_ratio_reads_more_than_one_as_better() -> None:
    assert ratio(BY_KEY["ls_cold"], 2.0, 6.0) == 3.0  # a time: reference / value
    assert ratio(BY_KEY["read_cold"], 300.0, 100.0) == 3.0  # a throughput: value / reference
    assert ratio(BY_KEY["ls_cpu"], 1.0, 4.0) == 4.0  # CPU seconds: a quarter of them is 4x cheaper
    assert ratio(BY_KEY["rss_read"], 150.0, 15.0) == 10.0  # memory: the plain size ratio
    assert ratio(BY_KEY["ls_cpu"], 0.0, 4.0) is None


def test_ratio_columns_put_the_first_peer_against_every_other() -> None:
    assert ratio_columns(PEERS) == [("obsfs", "s3fs"), ("obsfs", "rclone"), ("obsfs", SDK)]
    assert ratio_columns(["s3fs"]) == []


def measured() -> dict[str, dict[str, float]]:
    return {
        "obsfs": {"ls_cold": 2.0, "ls_warm": 1.5, "rm_flat_returned": 1.0, "tree_durable": 30.0,
                  "mount_ready": 0.49, "rss_read": 90.0, "ls_own_cold": 1.0},
        "s3fs": {"ls_cold": 6.0, "ls_warm": 0.7, "rm_flat_returned": 2.0, "ls_own_cold": 6.0},
        SDK: {"tree_durable": 24.0},
    }


def test_judge_gives_each_target_a_verdict() -> None:
    verdicts = {(v.target.metric, v.target.reference): v for v in judge(measured())}
    assert len(verdicts) == len(TARGETS)
    cold = verdicts["ls_cold", "s3fs"]
    assert (cold.value, cold.met) == (3.0, True)
    assert verdicts["ls_warm", "s3fs"].met is False
    assert verdicts["rm_flat_returned", "s3fs"].met is False  # 2x, needs 3x
    assert verdicts["rm_tree_returned", "s3fs"].met is None  # not measured
    assert verdicts["tree_durable", SDK].met is True  # 24/30 = 0.8 >= 1/1.5
    assert (verdicts["mount_ready", None].value, verdicts["mount_ready", None].met) == (0.49, False)
    assert verdicts["rss_read", None].met is True
    assert (verdicts["ls_own_cold", "s3fs"].value, verdicts["ls_own_cold", "s3fs"].met) == (6.0, True)


def filled() -> Results:
    results = Results()
    for peer, values in measured().items():
        for key, value in values.items():
            results.add(peer, key, value)
    return results


def row(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(label)).split()


def test_table_shows_values_ratios_and_targets() -> None:
    results = filled()
    text = table(results, QUICK, PEERS)
    header = row(text, "workload")
    cells = dict(zip(header[::-1], row(text, BY_KEY["ls_cold"].title(QUICK))[::-1], strict=False))
    assert (cells["obsfs"], cells["s3fs"], cells["rclone"]) == ("2.00", "6.00", "n/a")
    assert (cells["obsfs/s3fs"], cells["obsfs/rclone"]) == ("3.00x", "-")
    assert "#16.1 ls -l 1000 objects, cold: obsfs/s3fs at least 1.50x: 3.00x, met" in text
    assert "#16.2 ls -l 1000 objects obsfs wrote, cold: obsfs/s3fs at least 5.00x: 6.00x, met" in text
    assert "#16.6 mount until it answers (listing of its root): obsfs at most 0.3 s: 0.49 s, NOT MET" in text


def test_table_reports_a_missing_peer_in_every_row() -> None:
    results = filled()
    results.fail("rclone", 0, "any", "rclone is not installed")
    text = table(results, QUICK, PEERS)
    header = row(text, "workload")
    for key in ("ls_cold", "rm_tree_returned", "mount_ready"):
        cells = row(text, BY_KEY[key].title(QUICK))
        assert cells[header.index("rclone") - len(header)] == "FAIL", key


def test_table_tells_wrong_attributes_from_failures_and_sdk_gaps() -> None:
    results = filled()
    results.fail("s3fs", 1, "ls", "AttributeMismatch: ...", bad_data=True)
    text = table(results, QUICK, PEERS)
    header = row(text, "workload")
    warm = row(text, BY_KEY["ls_cpu"].title(QUICK))
    assert warm[header.index("s3fs") - len(header)] == "BADDATA"
    assert warm[header.index(SDK) - len(header)] == "n/a"  # no daemon, no CPU row for the SDK
    rm = row(text, BY_KEY["rm_tree_returned"].title(QUICK))
    assert rm[header.index("s3fs") - len(header)] == "n/a"  # not run, not failed


def test_keeper_targets_judge_obsfs_against_itself_without_one() -> None:
    """#14.4: the four throughputs of a mount with a keeper against one with ``-o nokeeper``."""
    meds = {"obsfs": {"write_durable": 190.0, "read_cold": 300.0, "read_warm": 900.0, "cp_durable": 2.0},
            "obsfs-nokeeper": {"write_durable": 200.0, "read_cold": 300.0, "read_warm": 1000.0, "cp_durable": 2.0}}
    verdicts = {v.target.metric: v for v in judge(meds) if v.target.reference == "obsfs-nokeeper"}
    assert {key: v.met for key, v in verdicts.items()} == {
        "write_durable": True, "read_cold": True, "read_warm": False, "cp_durable": True}  # 0.95, 1, 0.9, 1
    assert "#14.4 seq write 64 MiB, until durable: obsfs/obsfs-nokeeper at least 0.95x" in \
        verdicts["write_durable"].line(QUICK)


def test_workloads_pick_groups_and_refuse_unknown_ones() -> None:
    args = parse_args(["--peers", "obsfs-nokeeper,obsfs", "--workloads", "read, write"])
    assert (args.peers, args.workloads) == (["obsfs", "obsfs-nokeeper"], {"write", "read"})
    assert parse_args([]).workloads == set(WORKLOADS) == {"write", "read", "ls", "ls_own", "rm_flat", "rm_tree", "tree"}
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "write,seq"])

def test_the_directory_obsfs_writes_for_ls_own_carries_the_listed_attributes(tmp_path: Path) -> None:
    """What ``ls_own`` writes through the mount, written here to a local directory: ``ls -l``
    must find LISTED on every file, as it then checks on each peer's mount."""
    write_owned(tmp_path / "own", flat_names(5), LISTED)
    ls_long(tmp_path / "own", 5, LISTED, FIELDS)
