"""Rendering the kustomize overlays under deploy/ and reading what the rendered objects say.

Everything here is offline: ``kubectl kustomize`` only reads files, and the questions asked of
the objects (which host path is behind a container path, what ``$(VAR)`` expands to) follow
the Kubernetes rules for volumes, subPaths and dependent environment variables.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "kubernetes"
EXAMPLES = BASE / "examples"
DRIVER_IMAGE = "obsfs-csi"
# kustomize features the manifests use (components, replacements with delimiters, labels)
# arrived in v4; v5.5 (kubectl 1.32) is what the manifests were written and tested with.
MIN_KUSTOMIZE = (5, 0)

Obj = dict[str, Any]


MONITORING = DEPLOY / "monitoring"  # an add-on for the Prometheus Operator, not a driver overlay


def overlays() -> list[Path]:
    """Every directory under deploy/ that kustomize builds into a driver (not components, not
    the monitoring add-on)."""
    found = []
    for kustomization in sorted(DEPLOY.glob("*/kustomization.yaml")):
        if kustomization.parent == MONITORING:
            continue
        if yaml.safe_load(kustomization.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(kustomization.parent)
    return found


def overlay_id(path: Path) -> str:
    return path.name


@functools.cache
def kubectl() -> str:
    """kubectl's path, after checking that its embedded kustomize is new enough."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed: the deploy tests render the overlays with `kubectl kustomize`. "
                    "Install kubectl 1.27+ (kustomize v5). Debian bookworm's kubernetes-client is kubectl 1.20 "
                    "with kustomize v2, which cannot build components or replacements.", pytrace=False)
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    found = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    match = re.match(r"v?(\d+)\.(\d+)", found)
    if not match or (int(match[1]), int(match[2])) < MIN_KUSTOMIZE:
        pytest.fail(f"{path} embeds kustomize {found or 'of unknown version'}; the manifests need v"
                    f"{'.'.join(map(str, MIN_KUSTOMIZE))}+ (kubectl 1.27+)", pytrace=False)
    return path


def kustomize(directory: Path) -> list[Obj]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{out.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@functools.cache
def _rendered(directory: Path) -> tuple[Obj, ...]:
    return tuple(kustomize(directory))


def render(directory: Path) -> list[Obj]:
    return list(_rendered(directory))


def load_examples() -> dict[str, list[Obj]]:
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(EXAMPLES.glob("*.yaml"))}


def ref(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[ref(o) for o in found]}"
    return found[0]


def flags(args: list[str]) -> dict[str, str | None]:
    """``--name=value`` and bare ``--name`` arguments, by name."""
    result: dict[str, str | None] = {}
    for arg in args:
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            result[name] = value if sep else None
    return result


def image_name(image: str) -> str:
    """``registry/path/name:tag`` -> ``name``."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


@dataclass(frozen=True)
class PodSpec:
    """The pod template of a workload, with the ConfigMaps of the same rendering."""

    owner: Obj
    spec: Obj
    config_maps: dict[str, dict[str, str]]

    @staticmethod
    def of(objs: list[Obj], kind: str, name: str) -> PodSpec:
        owner = one(objs, kind, name)
        maps = {o["metadata"]["name"]: o.get("data", {}) for o in find(objs, "ConfigMap")}
        return PodSpec(owner, owner["spec"]["template"]["spec"], maps)

    def containers(self) -> list[Obj]:
        return list(self.spec["containers"])

    def container(self, name: str) -> Obj:
        matches = [c for c in self.containers() if c["name"] == name]
        assert len(matches) == 1, f"{ref(self.owner)} has no container {name!r}"
        return matches[0]

    def by_image(self, name: str) -> list[Obj]:
        return [c for c in self.containers() if image_name(c["image"]) == name]

    def volume(self, name: str) -> Obj:
        matches = [v for v in self.spec.get("volumes", []) if v["name"] == name]
        assert len(matches) == 1, f"{ref(self.owner)} has no volume {name!r}"
        return matches[0]

    def env(self, container: Obj) -> dict[str, str]:
        """The container's environment as the kubelet would build it, for the sources that can be
        known offline (values and ConfigMap keys); field references become ``<fieldPath>``."""
        values: dict[str, str] = {}
        for var in container.get("env", []):
            if "value" in var:
                values[var["name"]] = self.expand(var["value"], values)
                continue
            source = var.get("valueFrom", {})
            if "configMapKeyRef" in source:
                key = source["configMapKeyRef"]
                values[var["name"]] = self.config_maps[key["name"]][key["key"]]
            elif "fieldRef" in source:
                values[var["name"]] = f"<{source['fieldRef']['fieldPath']}>"
        return values

    @staticmethod
    def expand(text: str, env: dict[str, str]) -> str:
        """Kubernetes' ``$(VAR)`` expansion; an undefined reference is left as is."""
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)

    def args(self, container: Obj) -> list[str]:
        env = self.env(container)
        return [self.expand(arg, env) for arg in container.get("command", []) + container.get("args", [])]

    @staticmethod
    def mount_of(container: Obj, path: str) -> Obj | None:
        """The volumeMount that holds ``path`` in ``container``: the longest that does."""
        best: Obj | None = None
        for mount in container.get("volumeMounts", []):
            inside = posixpath.normpath(mount["mountPath"])
            if (path == inside or path.startswith(inside.rstrip("/") + "/")) and \
                    (best is None or len(inside) > len(posixpath.normpath(best["mountPath"]))):
                best = mount
        return best

    def host_path(self, container: Obj, path: str) -> str | None:
        """The node path behind ``path`` in ``container``: its mount's hostPath volume (plus
        subPath and the rest of the path). None if no hostPath volume holds it."""
        mount = self.mount_of(container, path)
        if mount is None:
            return None
        volume = self.volume(mount["name"])
        if "hostPath" not in volume:
            return None
        root = posixpath.join(volume["hostPath"]["path"], mount.get("subPath", ""))
        rest = posixpath.relpath(path, posixpath.normpath(mount["mountPath"]))
        return posixpath.normpath(posixpath.join(root, rest))

    def volume_path(self, container: Obj, path: str) -> tuple[str, str] | None:
        """``(volume name, path inside the volume)`` of ``path`` in ``container``, so that two
        containers can be compared whatever the volume type (emptyDir included)."""
        mount = self.mount_of(container, path)
        if mount is None:
            return None
        rest = posixpath.relpath(path, posixpath.normpath(mount["mountPath"]))
        return mount["name"], posixpath.normpath(posixpath.join(mount.get("subPath", ""), rest))


def unix_path(endpoint: str) -> str:
    """``unix:///csi/csi.sock`` or ``/csi/csi.sock`` -> ``/csi/csi.sock``."""
    return endpoint.removeprefix("unix://")
