"""What the bench measures, and the samples and failures it collected, per peer."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.profile import MiB, Profile

SDK = "sdk"
CPU = "s CPU"  # the unit of the rows that sum utime + stime of a mount's processes over a workload


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # formatted with the profile's sizes
    unit: str
    higher_is_better: bool
    group: str  # the workload group that produces it, to tell "failed" from "not applicable"
    sdk: bool = False  # whether the raw SDK has an equivalent
    memory: bool = False  # ratios of memory are plain size ratios, not speedups

    @property
    def seconds(self) -> bool:
        return self.unit in ("s", CPU)

    def title(self, profile: Profile) -> str:
        return self.label.format(seq=f"{profile.seq_bytes // MiB} MiB", files=profile.small_files,
                                 kib=profile.small_bytes // 1024, objects=profile.ls_objects,
                                 rm_files=profile.rm_files, tree_files=profile.tree_files,
                                 tree_dirs=profile.tree_dirs)



METRICS = [
    Metric("write_durable", "seq write {seq}, until durable", "MB/s", True, "write", sdk=True),
    Metric("write_closed", "seq write {seq}, fsync+close returned", "MB/s", True, "write"),
    Metric("write_cpu", "seq write {seq}, until durable", CPU, False, "write"),
    Metric("read_cold", "seq read {seq}, cold", "MB/s", True, "read", sdk=True),
    Metric("read_warm", "seq re-read {seq}, warm", "MB/s", True, "read"),
    Metric("read_cpu", "seq read {seq}, cold + warm", CPU, False, "read"),
    Metric("rss_read", "RSS peak reading {seq} (VmHWM)", "MiB", False, "read", memory=True),
    Metric("cp_returned", "cp -r {files} x {kib} KiB, returned", "s", False, "write"),
    Metric("cp_durable", "cp -r {files} x {kib} KiB, durable", "s", False, "write", sdk=True),
    Metric("cp_cpu", "cp -r {files} x {kib} KiB, until durable", CPU, False, "write"),
    Metric("umount_after_write", "unmount after the writes", "s", False, "write"),
    Metric("ls_cold", "ls -l {objects} objects, cold", "s", False, "ls", sdk=True),
    Metric("ls_warm", "ls -l {objects} objects, warm", "s", False, "ls"),
    Metric("ls_cpu", "ls -l {objects} objects, cold + warm", CPU, False, "ls"),
    Metric("ls_remount", "ls -l {objects} objects, remount, same cache dir", "s", False, "ls"),
    Metric("ls_own_cold", "ls -l {objects} objects obsfs wrote, cold", "s", False, "ls_own"),
    Metric("ls_own_cpu", "ls -l {objects} objects obsfs wrote, cold", CPU, False, "ls_own"),
    Metric("rm_flat_returned", "rm -r {rm_files} files in 1 dir, returned", "s", False, "rm_flat"),
    Metric("rm_flat_durable", "rm -r {rm_files} files in 1 dir, durable", "s", False, "rm_flat", sdk=True),
    Metric("rm_flat_cpu", "rm -r {rm_files} files in 1 dir, until durable", CPU, False, "rm_flat"),
    Metric("rm_tree_returned", "rm -r {tree_files} files in {tree_dirs} dirs, returned", "s", False, "rm_tree"),
    Metric("rm_tree_durable", "rm -r {tree_files} files in {tree_dirs} dirs, durable", "s", False, "rm_tree",
           sdk=True),
    Metric("rm_tree_cpu", "rm -r {tree_files} files in {tree_dirs} dirs, until durable", CPU, False, "rm_tree"),
    Metric("tree_returned", "cp -r {tree_files} x {kib} KiB in {tree_dirs} dirs, returned", "s", False, "tree"),
    Metric("tree_durable", "cp -r {tree_files} x {kib} KiB in {tree_dirs} dirs, durable", "s", False, "tree",
           sdk=True),
    Metric("tree_cpu", "cp -r {tree_files} x {kib} KiB in {tree_dirs} dirs, until durable", CPU, False, "tree"),
    Metric("mount_ready", "mount until it answers (listing of its root)", "s", False, "any"),
    Metric("rss_idle", "RSS idle (fresh mount)", "MiB", False, "write", memory=True),
    Metric("rss_peak", "RSS peak, any workload (VmHWM)", "MiB", False, "any", memory=True),
]
BY_KEY = {m.key: m for m in METRICS}
# The workload groups, in the order a run takes them (``--workloads`` picks some); "any" is no workload.
WORKLOADS = [group for group in dict.fromkeys(m.group for m in METRICS) if group != "any"]


def ratio(metric: Metric, value: float, reference: float) -> float | None:
    """How many times better ``value`` is than ``reference`` (>1: better); memory: the plain size ratio."""
    if value <= 0 or reference <= 0:
        return None
    if metric.memory or metric.higher_is_better:
        return value / reference
    return reference / value


@dataclass
class Failure:
    peer: str
    run: int
    group: str
    message: str
    bad_data: bool  # a wrong answer (data or attributes), as opposed to an error the peer reported


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def add(self, peer: str, metric: str, value: float) -> None:
        assert metric in BY_KEY, metric
        self.samples.setdefault(peer, {}).setdefault(metric, []).append(value)

    def fail(self, peer: str, run: int, group: str, message: str, bad_data: bool = False) -> None:
        self.failures.append(Failure(peer, run, group, message, bad_data))

    def failures_of(self, peer: str, group: str) -> list[Failure]:
        """A failure of group "any" (e.g. the peer is not installed) counts against every group."""
        return [f for f in self.failures if f.peer == peer and (group == "any" or f.group in (group, "any"))]
