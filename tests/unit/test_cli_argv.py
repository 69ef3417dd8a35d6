"""The command line as mount.fuse3 writes it: ``obsfs SOURCE MOUNTPOINT -o OPTS``."""

from __future__ import annotations

import pytest

from obsfs.cli import _parser, with_command
from obsfs.options import parse_options


def test_mount_fuse3_form_is_obsfs_mount() -> None:
    argv = with_command(["bucket:/team", "/mnt/b", "-o", "rw,passwd_file=/etc/p,dev,suid"])
    args = _parser().parse_args(argv)
    assert (args.command, args.source, args.mountpoint, args.foreground) == ("mount", "bucket:/team", "/mnt/b", False)
    assert parse_options(args.options).fsname == "bucket:/team"  # what mount -a compares with fstab
    assert parse_options(args.options).passwd_file == "/etc/p"


def test_an_fsname_in_the_line_wins() -> None:
    argv = with_command(["bucket", "/mnt/b", "-o", "fsname=mine"])
    assert parse_options(_parser().parse_args(argv).options).fsname == "mine"


def test_a_source_with_commas_stays_one_fsname() -> None:
    argv = with_command(["bucket:/a,b", "/mnt/b"])
    assert parse_options(_parser().parse_args(argv).options).fsname == "bucket:/a,b"


@pytest.mark.parametrize("argv", [
    ["mount", "bucket", "/mnt/b", "-o", "ro"],
    ["umount", "/mnt/b"],
    ["--version"],
    [],
])
def test_commands_and_options_keep_their_meaning(argv: list[str]) -> None:
    assert with_command(argv) == argv


def test_bucket_named_like_a_command_needs_its_prefix_form() -> None:
    """``mount:/`` is the bucket ``mount``; the bare word stays the command."""
    args = _parser().parse_args(with_command(["mount:/", "/mnt/b"]))
    assert (args.command, args.source) == ("mount", "mount:/")
