"""What the bench measures, and the samples and failures it collected, per peer."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.profile import MiB, Profile

SDK = "sdk"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # formatted with the profile's sizes
    unit: str
    higher_is_better: bool
    group: str  # the workload group that produces it, to tell "failed" from "not applicable"
    sdk: bool = False  # whether the raw SDK has an equivalent
    memory: bool = False  # ratios of memory are plain size ratios, not speedups

    def title(self, profile: Profile) -> str:
        return self.label.format(seq=f"{profile.seq_bytes // MiB} MiB", files=profile.small_files,
                                 kib=profile.small_bytes // 1024, objects=profile.ls_objects)


METRICS = [
    Metric("write_durable", "seq write {seq}, until durable", "MB/s", True, "write", sdk=True),
    Metric("write_closed", "seq write {seq}, fsync+close returned", "MB/s", True, "write"),
    Metric("read_cold", "seq read {seq}, cold", "MB/s", True, "read", sdk=True),
    Metric("read_warm", "seq re-read {seq}, warm", "MB/s", True, "read"),
    Metric("cp_returned", "cp -r {files} x {kib} KiB, returned", "s", False, "write"),
    Metric("cp_durable", "cp -r {files} x {kib} KiB, durable", "s", False, "write"),
    Metric("rm_returned", "rm -r {files} files, returned", "s", False, "write"),
    Metric("rm_durable", "rm -r {files} files, durable", "s", False, "write"),
    Metric("umount_after_write", "unmount after the writes", "s", False, "write"),
    Metric("ls_cold", "ls -l {objects} objects, cold", "s", False, "ls", sdk=True),
    Metric("ls_warm", "ls -l {objects} objects, warm", "s", False, "ls"),
    Metric("ls_remount", "ls -l {objects} objects, remount, same cache dir", "s", False, "ls"),
    Metric("rss_idle", "RSS idle (fresh mount)", "MiB", False, "write", memory=True),
    Metric("rss_peak", "RSS peak (VmHWM)", "MiB", False, "any", memory=True),
]
BY_KEY = {m.key: m for m in METRICS}


@dataclass
class Failure:
    peer: str
    run: int
    group: str
    message: str
    bad_data: bool  # a checksum mismatch, as opposed to an error the peer reported


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
        return [f for f in self.failures if f.peer == peer and (group == "any" or f.group == group)]
