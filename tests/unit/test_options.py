"""``-o`` option parsing and the mount source."""

from __future__ import annotations

import os

import pyfuse3
import pytest

from obsfs.errors import ConfigError
from obsfs.options import (
    MountOptions,
    default_owner,
    join_option,
    parse_options,
    parse_source,
    split_options,
)
from obsfs.runtime import MountSpec, fuse_options, keeper_wanted


def test_defaults() -> None:
    opts = parse_options([])
    assert opts == MountOptions()
    assert opts.kernel_flags == []
    assert opts.multipart_size == 16 << 20


def test_s3fs_names() -> None:
    opts = parse_options(["url=http://127.0.0.1:9000,use_path_request_style,passwd_file=/p,allow_other",
                          "uid=1000,gid=100,umask=022,mp_umask=0077,ro,dbglevel=info,multipart_size=8",
                          "parallel_count=3,stat_cache_expire=1.5,signature=v2"])
    assert opts.url == "http://127.0.0.1:9000"
    assert opts.use_path_request_style is True
    assert opts.passwd_file == "/p"
    assert opts.allow_other is True
    assert (opts.uid, opts.gid) == (1000, 100)
    assert opts.umask == 0o22
    assert opts.mp_umask == 0o77
    assert opts.ro is True
    assert opts.dbglevel == "INFO"
    assert opts.multipart_size == 8 << 20
    assert opts.parallel_count == 3
    assert opts.stat_cache_expire == 1.5
    assert opts.signature == "v2"


@pytest.mark.parametrize(("text", "field", "value"), [
    ("use_cache=/var/cache/obsfs", "cache_dir", "/var/cache/obsfs"),
    ("endpoint_url=https://obs.example", "url", "https://obs.example"),
    ("connect_timeout=7", "readwrite_timeout", 7.0),
    ("sigv=obs", "signature", "obs"),
])
def test_aliases(text: str, field: str, value: object) -> None:
    assert getattr(parse_options([text]), field) == value


@pytest.mark.parametrize(("text", "value"), [
    ("ro", True), ("ro=1", True), ("ro=true", True), ("ro=Yes", True), ("ro=on", True),
    ("ro=0", False), ("ro=false", False), ("ro=no", False), ("ro=OFF", False),
])
def test_booleans(text: str, value: bool) -> None:
    assert parse_options([text]).ro is value


@pytest.mark.parametrize(("text", "value"), [
    ("noro", False), ("ro,noro", False), ("nouse_path_request_style", False), ("nokeeper", False),
])
def test_no_prefix_turns_a_boolean_off(text: str, value: bool) -> None:
    opts = parse_options([text])
    assert getattr(opts, text.rsplit("no", 1)[1]) is value


@pytest.mark.parametrize("text", ["nokeeper=1", "nourl", "nodbglevel", "nossl_verify"])
def test_no_prefix_only_for_bare_booleans(text: str) -> None:
    with pytest.raises(ConfigError, match="unknown mount option"):
        parse_options([text])


@pytest.mark.parametrize(("text", "foreground", "wanted"), [
    ("", False, True), ("", True, False),  # -f: the process started serves, as s3fs -f does
    ("keeper", True, True), ("nokeeper", False, False), ("keeper=off", False, False), ("keeper=0", False, False),
])
def test_keeper_is_the_default_except_in_the_foreground(text: str, foreground: bool, wanted: bool) -> None:
    assert keeper_wanted(parse_options([text]), foreground) is wanted


def test_fuse_options_include_pyfuse3_defaults() -> None:
    """obsfs.runtime does not import pyfuse3 (a mount's command must not load it): it writes
    pyfuse3's default options out, which must stay all of them."""
    assert pyfuse3.default_options <= fuse_options(MountSpec("b", "", "/mnt", parse_options([])))


@pytest.mark.parametrize(("text", "value"), [
    ("ssl_verify", True), ("ssl_verify=0", False), ("ssl_verify=true", True),
    ("ssl_verify=/etc/ca.pem", "/etc/ca.pem"),
])
def test_ssl_verify(text: str, value: bool | str) -> None:
    assert parse_options([text]).ssl_verify == value


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="r0"):
        parse_options(["allow_other,r0"])


@pytest.mark.parametrize(("text", "name"), [
    ("uid=abc", "uid"),
    ("uid=-1", "uid"),
    ("uid", "uid"),
    ("umask=999", "umask"),
    ("umask=17777", "umask"),
    ("ro=maybe", "ro"),
    ("signature=v3", "signature"),
    ("dbglevel=loud", "dbglevel"),
    ("multipart_size=4", "multipart_size"),
    ("stat_cache_expire=-1", "stat_cache_expire"),
    ("url=", "url"),
    ("use_cache=", "cache_dir"),
])
def test_bad_values_name_the_option(text: str, name: str) -> None:
    with pytest.raises(ConfigError, match=f"option {name}"):
        parse_options([text])


def test_checks_after_parsing() -> None:
    with pytest.raises(ConfigError, match="url"):
        parse_options(["url=obs.example.com"])
    with pytest.raises(ConfigError, match="parallel_count"):
        parse_options(["parallel_count=0"])


def test_escaped_commas() -> None:
    assert split_options(r"a=1\,2,b, ,c\\d,") == ["a=1,2", "b", r"c\d"]
    assert parse_options([r"cache_dir=/x\,y,ro"]).cache_dir == "/x,y"


def test_kernel_flags() -> None:
    opts = parse_options(["rw,nosuid,nodev,noatime,_netdev,defaults"])
    assert opts.kernel_flags == ["nosuid", "nodev", "noatime", "_netdev", "defaults"]
    assert opts.ro is False


def test_what_mount_and_mount_fuse3_pass() -> None:
    """As mount(8) renders the flags of ``user,ro,relatime,sync`` and mount.fuse3 adds dev,suid."""
    opts = parse_options(["ro,relatime,sync,dirsync,nodiratime,lazytime,iversion,strictatime,noexec,nosuid,nodev",
                          "rw,dev,suid,exec,atime,async,norelatime,loud,silent,nomand,symfollow"])
    assert opts.ro is True
    kernel = fuse_options(MountSpec("b", "", "/mnt", opts))
    assert {"ro", "noexec", "nosuid", "nodev", "exec", "atime", "fsname=obsfs:b"} <= kernel
    assert not {"suid", "dev", "relatime", "sync"} & kernel  # libfuse refuses some; see FUSE_KERNEL_FLAGS


def test_suid_and_dev_never_reach_the_kernel() -> None:
    """mount.fuse3 adds them to every line without nosuid,nodev; a bucket writer sets the modes."""
    kernel = fuse_options(MountSpec("b", "p", "/mnt", parse_options(["dev,suid,fsname=b:/p"])))
    assert not {"suid", "dev"} & kernel
    assert "fsname=b:/p" in kernel and "fsname=obsfs:b:/p" not in kernel


@pytest.mark.parametrize("text", [
    "_netdev,nofail,noauto,auto,user,users,nouser,owner,group,defaults",
    "x-systemd.automount,x-systemd.mount-timeout=30,x-systemd.requires=network-online.target",
    "comment=systemd.automount,x-gvfs-hide",
])
def test_options_of_other_programs_are_ignored(text: str) -> None:
    """fstab options for mount(8), systemd or file managers, should one reach obsfs itself."""
    opts = parse_options([text])
    assert (opts.url, opts.ro) == (MountOptions().url, False)


def test_nosymfollow_is_refused() -> None:
    """libfuse 3.14 cannot set it; dropping a security flag quietly would be worse."""
    with pytest.raises(ConfigError, match="nosymfollow"):
        parse_options(["nosymfollow"])


@pytest.mark.parametrize("value", ["bucket", "bucket:/a,b", "bucket:/back\\slash,", "b:/,,\\,"])
def test_join_option_survives_splitting(value: str) -> None:
    assert parse_options([join_option("fsname", value) + ",ro"]).fsname == value


def test_kernel_flag_with_a_value_is_unknown() -> None:
    with pytest.raises(ConfigError, match="nosuid"):
        parse_options(["nosuid=1"])


def test_later_values_win() -> None:
    assert parse_options(["uid=1", "uid=2"]).uid == 2


def test_default_owner() -> None:
    assert default_owner(MountOptions()) == (os.getuid(), os.getgid())
    assert default_owner(parse_options(["uid=0,gid=7"])) == (0, 7)


@pytest.mark.parametrize(("source", "expected"), [
    ("bucket", ("bucket", "")),
    ("bucket:", ("bucket", "")),
    ("bucket:/", ("bucket", "")),
    ("bucket:/a/b/", ("bucket", "a/b")),
    ("bucket:a", ("bucket", "a")),
    ("bucket:/a..b/c", ("bucket", "a..b/c")),
])
def test_parse_source(source: str, expected: tuple[str, str]) -> None:
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["", ":/prefix", "bucket:/..", "bucket:/a/../b", "bucket:../a"])
def test_parse_source_rejects(source: str) -> None:
    with pytest.raises(ConfigError):
        parse_source(source)
