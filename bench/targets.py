"""The ratios issues ask for, judged from one bench's medians: #16's "done when" list, #15's
bound on what counting metrics costs (obsfs against itself with ``-o metrics=off``), and #14's on
what the keeper costs (obsfs against itself with ``-o nokeeper``).

Each target is either a ratio of obsfs to a reference peer (read as in bench.report: >1 means obsfs
is faster) or a bound on obsfs's own value. Item 2 is the cold ``ls -l`` of a directory obsfs
wrote with ``-o attr_index``, listed by obsfs with the option and by each peer on a fresh mount
(bench.session.Session.fuse_ls_own). Item 7 ("nothing gets slower") is not judged here: it
compares two bench runs, so it needs an earlier JSON next to this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.metrics import BY_KEY, SDK, ratio
from bench.profile import Profile

SUBJECT = "obsfs"


@dataclass(frozen=True)
class Target:
    item: int  # the item of the issue's "Done when" list
    metric: str
    reference: str | None  # a peer to take the ratio to; None: ``bound`` is an upper bound on the value itself
    bound: float  # the least ratio, or the greatest value
    issue: int = 16

    def describe(self, profile: Profile) -> str:
        metric = BY_KEY[self.metric]
        where = f"#{self.issue}.{self.item} {metric.title(profile)}"
        if self.reference is None:
            return f"{where}: {SUBJECT} at most {self.bound:g} {metric.unit}"
        return f"{where}: {SUBJECT}/{self.reference} at least {self.bound:.2f}x"


TARGETS = [
    Target(1, "ls_cold", "s3fs", 1.5),
    Target(2, "ls_own_cold", "s3fs", 5.0),
    Target(3, "ls_warm", "s3fs", 1.0),
    # rm -r returns once the deletes are acknowledged, durably, by the journal; the durable rows show the rest.
    Target(4, "rm_flat_returned", "s3fs", 3.0),
    Target(4, "rm_tree_returned", "s3fs", 3.0),
    Target(5, "tree_durable", SDK, 1 / 1.5),
    Target(6, "mount_ready", None, 0.3),
    Target(6, "rss_read", None, 100.0),
    # Issue #15, item 1: collecting metrics costs at most 3 % on the small-file workload.
    Target(1, "cp_durable", "obsfs-nometrics", 0.97, issue=15),
    # Issue #14, item 4: with the keeper (the default), throughput is at least 0.95x of a mount without.
    *(Target(4, key, "obsfs-nokeeper", 0.95, issue=14)
      for key in ("write_durable", "read_cold", "read_warm", "cp_durable")),
]


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None  # the ratio, or obsfs's own value; None when a side was not measured
    met: bool | None  # None: not measured

    def line(self, profile: Profile) -> str:
        metric = BY_KEY[self.target.metric]
        if self.value is None:
            shown = "not measured"
        elif self.target.reference is None:
            shown = f"{self.value:.2f} {metric.unit}"
        else:
            shown = f"{self.value:.2f}x"
        state = {True: "met", False: "NOT MET", None: "-"}[self.met]
        return f"  {self.target.describe(profile)}: {shown}, {state}"


def judge(meds: dict[str, dict[str, float]], targets: list[Target] = TARGETS) -> list[Verdict]:
    verdicts = []
    for target in targets:
        metric = BY_KEY[target.metric]
        own = meds.get(SUBJECT, {}).get(target.metric)
        if target.reference is None:
            value = own
            met = None if value is None else value <= target.bound
        else:
            reference = meds.get(target.reference, {}).get(target.metric)
            value = None if own is None or reference is None else ratio(metric, own, reference)
            met = None if value is None else value >= target.bound
        verdicts.append(Verdict(target, value, met))
    return verdicts
