"""Where a dynamic volume goes in a shared bucket: a root prefix and a pattern of PVC metadata.

A StorageClass may say ``prefix: teams/a`` and ``pathPattern:
${pvc.metadata.namespace}/${pvc.metadata.name}``, so that an operator browsing the bucket finds a
claim's data under its namespace and name instead of under ``pvc-<uid>``. The values come from
external-provisioner, which passes the claim's namespace and name and the PV's name as parameters
only when it runs with ``--extra-create-metadata``.

The pattern is checked when the parameters are parsed (unknown variables, a shape that can never
give a valid prefix), and its result again when a volume is created, because only then are the
names known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from csi.errors import InvalidArgument
from csi.naming import prefix_problem

PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"

# The variables a pattern may use, and the parameter external-provisioner passes each in.
VARIABLES = {
    "pvc.metadata.name": PVC_NAME,
    "pvc.metadata.namespace": PVC_NAMESPACE,
    "pv.metadata.name": PV_NAME,
}
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class VolumePath:
    """The StorageClass's placement rule for volumes in a shared bucket."""

    root: str = ""  # "" or "teams/a", without slashes at either end
    pattern: str | None = None  # None: the volume's own name (``pvc-<uid>``) under ``root``

    def prefix_for(self, leaf: str, parameters: Mapping[str, str]) -> str:
        """The prefix of the volume whose default name is ``leaf``: ``root/expanded-pattern``."""
        below = leaf if self.pattern is None else expand(self.pattern, parameters)
        prefix = f"{self.root}/{below}" if self.root else below
        problem = prefix_problem(prefix)
        if problem:
            raise InvalidArgument(f"{_claim(parameters)}: the StorageClass's prefix and pathPattern give "
                                  f"{prefix!r}, which cannot hold a volume: {problem}")
        return prefix


def parse_root(value: str, key: str) -> str:
    """The ``prefix`` parameter: slashes at the ends are dropped, the rest must be a valid prefix."""
    root = value.strip("/")
    problem = prefix_problem(root) if root else None
    if problem:
        raise InvalidArgument(f"StorageClass parameter {key!r}: {problem}")
    return root


def check_pattern(pattern: str, key: str) -> str:
    """The ``pathPattern`` parameter, refused at once if it names a variable we do not know or
    cannot give a valid prefix whatever the names are."""
    unknown = [name for name in _VARIABLE.findall(pattern) if name not in VARIABLES]
    if unknown:
        raise InvalidArgument(f"StorageClass parameter {key!r}: unknown variable ${{{unknown[0]}}}; "
                              f"use {', '.join('${' + v + '}' for v in VARIABLES)}")
    if not _VARIABLE.search(pattern):
        raise InvalidArgument(f"StorageClass parameter {key!r}: {pattern!r} names no variable, so every "
                              "volume would get the same prefix; use ${pvc.metadata.name} at least")
    problem = prefix_problem(_VARIABLE.sub("x", pattern.strip("/")))
    if problem or "$" in _VARIABLE.sub("", pattern):
        raise InvalidArgument(f"StorageClass parameter {key!r}: {pattern!r} cannot give a valid prefix: "
                              f"{problem or 'a $ that does not start a ${variable}'}")
    return pattern.strip("/")


def expand(pattern: str, parameters: Mapping[str, str]) -> str:
    """The pattern with each variable replaced by the claim's value."""

    def value(match: re.Match[str]) -> str:
        source = VARIABLES[match[1]]
        found = parameters.get(source)
        if not found:
            raise InvalidArgument(f"pathPattern uses ${{{match[1]}}}, but CreateVolume did not receive {source}: "
                                  "run external-provisioner (v1.5 or later) with --extra-create-metadata")
        return found

    return _VARIABLE.sub(value, pattern)


def _claim(parameters: Mapping[str, str]) -> str:
    claim = claim_of(parameters)
    return f"PVC {claim}" if claim else "the claim"


def claim_of(parameters: Mapping[str, str]) -> str:
    """``namespace/name`` of the claim, or "" when external-provisioner did not pass it."""
    namespace, name = parameters.get(PVC_NAMESPACE), parameters.get(PVC_NAME)
    return f"{namespace}/{name}" if namespace and name else ""
