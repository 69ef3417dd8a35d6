"""Offline checks of the Kubernetes manifests: every overlay renders, validates strictly, passes
only flags obsfs-csi has, and wires driver, sidecars and kubelet to the same socket."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, latest_version

from csi import secrets
from csi.driver import DRIVER_NAME
from csi.naming import parse_volume_id
from csi.params import PATH_PATTERN, parse_parameters
from tests.deploy.kube import (
    BASE,
    DEPLOY,
    DRIVER_IMAGE,
    REPO,
    Obj,
    PodSpec,
    find,
    flags,
    image_name,
    kustomize,
    load_examples,
    one,
    overlay_id,
    overlays,
    ref,
    render,
    unix_path,
)

OVERLAYS = overlays()
# The oldest schemas kubernetes-validate ships, and its newest.
VERSIONS = ("1.25", latest_version())
REGISTRARS = {"csi-node-driver-registrar", "driver-registrar"}
LIVENESS = "livenessprobe"
# Kubernetes 1.10-1.12 kubelets dial this path for a CSI driver that did not register through
# the (then alpha) plugin watcher, whatever their --root-dir: csiAddrTemplate in
# pkg/volume/csi of those releases. The v0.x driver-registrar without
# --kubelet-registration-path does not register that way.
LEGACY_SOCKET = "/var/lib/kubelet/plugins/{driver}/csi.sock"
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
# StorageClass keys reserved for external-provisioner v1+; it strips them before CreateVolume.
PROVISIONER_PREFIX = "csi.storage.k8s.io/"


def is_kubernetes_api(api_version: str) -> bool:
    """Core, unsuffixed built-in groups (apps, batch, ...) and *.k8s.io are Kubernetes' own;
    anything else (security.openshift.io, ...) is an extension kubernetes-validate cannot know."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def validation_problems(objs: list[Obj], version: str) -> tuple[list[str], list[str]]:
    """(errors, objects without a schema) for ``objs`` against ``version``, strict mode."""
    errors, unchecked = [], []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{ref(obj)} ({obj['apiVersion']}) against {version}: {path}: {exc.message}")
        except SchemaNotFoundError:
            unchecked.append(ref(obj))
            if is_kubernetes_api(obj["apiVersion"]):
                errors.append(f"{ref(obj)}: {obj['apiVersion']} is a Kubernetes API that {version} does not have")
    return errors, unchecked


# The same image runs obsfs-mounter in a container of its own, with this command.
MOUNTER_COMMAND = ["tini", "--", "obsfs-mounter"]


@functools.cache
def help_text(module: str) -> str:
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def known_flags(module: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text(module)))


def workloads(objs: list[Obj]) -> list[PodSpec]:
    return [PodSpec.of(objs, o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] in WORKLOADS]


def driver_pods(objs: list[Obj]) -> list[tuple[PodSpec, Obj]]:
    return [(pod, c) for pod in workloads(objs) for c in pod.by_image(DRIVER_IMAGE)
            if c.get("command") != MOUNTER_COMMAND]


def mounter_pod(objs: list[Obj]) -> tuple[PodSpec, Obj]:
    found = [(pod, c) for pod in workloads(objs) for c in pod.by_image(DRIVER_IMAGE)
             if c.get("command") == MOUNTER_COMMAND]
    assert len(found) == 1, "expected one workload running obsfs-mounter"
    return found[0]


def node_pod(objs: list[Obj]) -> tuple[PodSpec, Obj]:
    found = [(pod, c) for pod, c in driver_pods(objs) if flags(pod.args(c)).get("--mode") == "node"]
    assert len(found) == 1, "expected one workload running obsfs-csi --mode=node"
    return found[0]


def controller_pod(objs: list[Obj]) -> tuple[PodSpec, Obj]:
    found = [(pod, c) for pod, c in driver_pods(objs) if flags(pod.args(c)).get("--mode") == "controller"]
    assert len(found) == 1, "expected one workload running obsfs-csi --mode=controller"
    return found[0]


@pytest.fixture(params=OVERLAYS, ids=overlay_id)
def overlay(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_every_platform_has_an_overlay() -> None:
    assert {"kubernetes", "openshift", "openshift-3.11"} <= {p.name for p in OVERLAYS}


def test_overlay_renders(overlay: Path) -> None:
    objs = render(overlay)
    assert objs, f"{overlay} renders nothing"
    for obj in objs:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj
    refs = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(refs) == len(set(refs)), "an object is rendered twice"


@pytest.mark.parametrize("version", VERSIONS)
def test_overlay_validates_strictly(overlay: Path, version: str) -> None:
    errors, _ = validation_problems(render(overlay), version)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", VERSIONS)
def test_examples_validate_strictly(version: str) -> None:
    examples = load_examples()
    assert {"secret.yaml", "pvc-pod.yaml", "rwx-two-writers.yaml", "static-pv.yaml", "read-only.yaml",
            "inline-pod.yaml"} <= set(examples)
    errors, unchecked = validation_problems([o for objs in examples.values() for o in objs], version)
    assert not errors, "\n".join(errors)
    assert not unchecked


def test_driver_flags_exist_in_its_help(overlay: Path) -> None:
    text = help_text("csi.main")
    known = known_flags("csi.main")
    modes = set(re.search(r"--mode \{([^}]*)\}", text)[1].split(","))  # type: ignore[index]
    pods = driver_pods(render(overlay))
    assert pods, f"no container runs the {DRIVER_IMAGE} image"
    for pod, container in pods:
        assert "command" not in container, "the image's ENTRYPOINT is obsfs-csi; pass flags as args"
        args = pod.args(container)
        unresolved = [a for a in args if "$(" in a]
        assert not unresolved, f"{ref(pod.owner)}: undefined variables in {unresolved}"
        for arg in args:
            assert arg.startswith("--"), f"{ref(pod.owner)}: obsfs-csi takes no positional argument {arg!r}"
        unknown = set(flags(args)) - known
        assert not unknown, f"{ref(pod.owner)} passes flags obsfs-csi does not have: {sorted(unknown)}"
        assert flags(args).get("--mode") in modes


def check_node_sockets(objs: list[Obj]) -> None:
    """Driver, registrar, livenessprobe and kubelet meet at one socket on the node, and the
    driver sees the kubelet directory at the path kubelet uses, with propagation back."""
    pod, driver = node_pod(objs)
    args = flags(pod.args(driver))
    name = args.get("--driver-name") or DRIVER_NAME
    endpoint = unix_path(args["--endpoint"] or "")
    socket = pod.host_path(driver, endpoint)
    assert socket is not None, f"the driver's socket {endpoint} is not on a hostPath volume"

    kubelet_dir = pod.config_maps["obsfs-csi-node"]["kubeletDir"]
    mounts = [m for m in driver["volumeMounts"] if m["mountPath"] == kubelet_dir]
    assert len(mounts) == 1, f"the driver does not mount the kubelet directory at {kubelet_dir}"
    assert mounts[0].get("mountPropagation") == "Bidirectional"
    assert pod.host_path(driver, kubelet_dir) == kubelet_dir
    assert driver.get("securityContext", {}).get("privileged") is True
    assert pod.env(driver).get("KUBELET_DIR", kubelet_dir) == kubelet_dir
    check_mounter(objs, pod, driver)

    registrars = [c for c in pod.containers() if image_name(c["image"]) in REGISTRARS]
    assert len(registrars) == 1
    registrar = registrars[0]
    reg_args = flags(pod.args(registrar))
    assert pod.host_path(registrar, unix_path(reg_args["--csi-address"] or "")) == socket
    registration_path = reg_args.get("--kubelet-registration-path")
    if registration_path is not None:
        # Registered through kubelet's plugin watcher: it reads the socket path from the
        # registrar, and finds the registrar in <kubelet dir>/plugins_registry.
        assert registration_path == socket
        assert socket == f"{kubelet_dir}/plugins/{name}/csi.sock"
        assert pod.host_path(registrar, "/registration") == f"{kubelet_dir}/plugins_registry"
    else:
        assert image_name(registrar["image"]) == "driver-registrar", \
            "node-driver-registrar needs --kubelet-registration-path"
        assert socket == LEGACY_SOCKET.format(driver=name)

    probes = [c for c in pod.containers() if image_name(c["image"]) == LIVENESS]
    assert len(probes) == 1
    assert pod.host_path(probes[0], unix_path(flags(pod.args(probes[0]))["--csi-address"] or "")) == socket
    check_probe_port(pod, driver, probes[0])


def check_mounter(objs: list[Obj], node: PodSpec, driver: Obj) -> None:
    """obsfs-mounter runs the daemons: in a DaemonSet that is never rolled by itself, with what a
    FUSE daemon needs, and with the node plugin's socket, kubelet directory and state directory
    at the same host paths and the same paths inside."""
    pod, mounter = mounter_pod(objs)
    assert pod.owner["kind"] == "DaemonSet" and pod.owner is not node.owner
    assert pod.owner["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert node.owner["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    assert "livenessProbe" not in mounter and "memory" not in mounter.get("resources", {}).get("limits", {})
    assert mounter.get("securityContext", {}).get("privileged") is True
    assert pod.host_path(mounter, "/dev/fuse") == "/dev/fuse"
    mounter_args, driver_args = flags(pod.args(mounter)[len(MOUNTER_COMMAND):]), flags(node.args(driver))
    kubelet_dir = node.config_maps["obsfs-csi-node"]["kubeletDir"]
    assert mounter_args["--kubelet-dir"] == driver_args["--kubelet-dir"] == kubelet_dir
    mounts = [m for m in mounter["volumeMounts"] if m["mountPath"] == kubelet_dir]
    assert len(mounts) == 1 and mounts[0].get("mountPropagation") == "Bidirectional"
    assert pod.host_path(mounter, kubelet_dir) == kubelet_dir
    socket = mounter_args["--socket"] or ""
    assert socket == driver_args["--mounter-socket"]
    assert pod.host_path(mounter, socket) == node.host_path(driver, socket) is not None
    state_dir = driver_args["--state-dir"] or ""
    assert pod.host_path(mounter, state_dir) == node.host_path(driver, state_dir) is not None
    unknown = set(mounter_args) - known_flags("csi.mounterd")
    assert not unknown, f"obsfs-mounter has no flags {sorted(unknown)}"


def check_probe_port(pod: PodSpec, driver: Obj, probe: Obj) -> None:
    """The driver's livenessProbe asks the livenessprobe sidecar, on the port it listens on."""
    probe_flags = flags(pod.args(probe))
    listen = probe_flags.get("--http-endpoint") or f":{probe_flags.get('--health-port') or 9808}"
    port = driver["livenessProbe"]["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in driver.get("ports", []) if p["name"] == port)
    assert listen.rpartition(":")[2] == str(port)


def check_controller_sockets(objs: list[Obj]) -> None:
    pod, driver = controller_pod(objs)
    endpoint = unix_path(flags(pod.args(driver))["--endpoint"] or "")
    where = pod.volume_path(driver, endpoint)
    assert where is not None
    sidecars = [c for c in pod.containers() if c is not driver]
    assert sidecars
    for sidecar in sidecars:
        address = flags(pod.args(sidecar)).get("--csi-address")
        assert address, f"{sidecar['name']} has no --csi-address"
        assert pod.volume_path(sidecar, unix_path(address)) == where, f"{sidecar['name']} dials another socket"
    check_probe_port(pod, driver, next(c for c in sidecars if image_name(c["image"]) == LIVENESS))


def test_socket_paths_agree(overlay: Path) -> None:
    objs = render(overlay)
    check_node_sockets(objs)
    check_controller_sockets(objs)


def test_kubelet_dir_is_set_in_one_place(tmp_path: Path) -> None:
    """Changing the ConfigMap value in an overlay moves every kubelet path of the DaemonSet."""
    elsewhere = "/srv/kubelet-elsewhere"
    base = os.path.relpath(BASE, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "configMapGenerator": [{"name": "obsfs-csi-node", "namespace": "obsfs-csi", "behavior": "merge",
                                "literals": [f"kubeletDir={elsewhere}"],
                                "options": {"disableNameSuffixHash": True}}],
        "components": [f"{base}/components/kubelet-dir"],
    }))
    objs = kustomize(tmp_path)
    for daemonset in map(json.dumps, find(objs, "DaemonSet")):
        assert "/var/lib/kubelet" not in daemonset
        assert elsewhere in daemonset
    check_node_sockets(objs)


def test_driver_name_agrees(overlay: Path) -> None:
    objs = render(overlay)
    names: dict[str, set[str]] = {}

    def seen(name: str | None, where: str) -> None:
        names.setdefault(name or "", set()).add(where)

    for pod, container in driver_pods(objs):
        seen(flags(pod.args(container)).get("--driver-name") or DRIVER_NAME, f"{ref(pod.owner)} --driver-name")
    for driver in find(objs, "CSIDriver"):
        seen(driver["metadata"]["name"], ref(driver))
    for sc in find(objs, "StorageClass"):
        seen(sc["provisioner"], f"{ref(sc)} provisioner")
    for pod in workloads(objs):
        for container in pod.containers():
            if "--provisioner" in flags(pod.args(container)):
                seen(flags(pod.args(container))["--provisioner"], f"{ref(pod.owner)} {container['name']}")
    pod, driver = node_pod(objs)
    socket = pod.host_path(driver, unix_path(flags(pod.args(driver))["--endpoint"] or "")) or ""
    seen(Path(socket).parent.name, "the node socket's directory")
    for pv in find([o for objs_ in load_examples().values() for o in objs_], "PersistentVolume"):
        seen(pv["spec"]["csi"]["driver"], f"example {ref(pv)}")
    assert list(names) == [DRIVER_NAME], f"driver names disagree: {names}"


def provisioner_major(objs: list[Obj]) -> int:
    pod, _ = controller_pod(objs)
    images = [c["image"] for c in pod.containers() if image_name(c["image"]) == "csi-provisioner"]
    assert len(images) == 1
    return int(re.search(r":v(\d+)\.", images[0])[1])  # type: ignore[index]


SECRET_KEY = re.compile(r"^(?:csi\.storage\.k8s\.io/(?P<new>[a-z-]+)-secret-name"
                        r"|csi(?P<old>[A-Za-z]+)SecretName)$")


def secret_refs(parameters: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Which RPC gets which Secret: {"provisioner": (name, namespace), ...}."""
    refs = {}
    for key, name in parameters.items():
        match = SECRET_KEY.match(key)
        if match is None:
            continue
        if match["new"]:
            kind, namespace = match["new"], parameters.get(f"csi.storage.k8s.io/{match['new']}-secret-namespace")
        else:
            kind = re.sub(r"(?<!^)([A-Z])", r"-\1", match["old"]).lower()
            namespace = parameters.get(f"csi{match['old']}SecretNamespace")
        assert namespace, f"{key} has no namespace parameter"
        refs[kind] = (name, namespace)
    return refs


def example_secret() -> Obj:
    return one(load_examples()["secret.yaml"], "Secret")


def test_secret_example_has_the_keys_the_driver_reads() -> None:
    data = example_secret()["stringData"]
    assert set(secrets.REQUIRED) | {secrets.REGION} <= set(data)
    secrets.store_config(data, "example")  # the values parse


def test_storageclass_parameters(overlay: Path) -> None:
    objs = render(overlay)
    secret = example_secret()["metadata"]
    expected = (secret["name"], secret["namespace"])
    legacy = provisioner_major(objs) == 0
    classes = find(objs, "StorageClass")
    assert {"obsfs", "obsfs-shared"} <= {sc["metadata"]["name"] for sc in classes}
    for sc in classes:
        parameters: dict[str, str] = sc.get("parameters", {})
        refs = secret_refs(parameters)
        # CreateVolume/DeleteVolume and the node's mount need the store credentials.
        assert {"provisioner", "node-stage", "node-publish"} <= set(refs), f"{ref(sc)}: {sorted(refs)}"
        assert set(refs.values()) == {expected}, f"{ref(sc)} points at another Secret: {refs}"
        prefixed = [k for k in parameters if k.startswith(PROVISIONER_PREFIX)]
        deprecated = [k for k in parameters if re.match(r"csi[A-Z]", k)]
        if legacy:  # csi-provisioner v0.x reads only the old names, and passes the rest on
            assert not prefixed, f"{ref(sc)}: csi-provisioner v0 does not know {prefixed}"
            assert not sc.get("allowVolumeExpansion"), "no resizer runs with the v0 sidecars"
        else:
            assert not deprecated, f"{ref(sc)}: csi-provisioner v1+ ignores {deprecated}"
        options = {k: v for k, v in parameters.items() if k not in prefixed and k not in deprecated}
        parse_parameters(options)  # what CreateVolume will check; raises InvalidArgument naming the key
        if PATH_PATTERN in parameters:  # the claim's names reach CreateVolume only with this flag
            pod, _ = controller_pod(objs)
            provisioner = next(c for c in pod.containers() if image_name(c["image"]) == "csi-provisioner")
            assert not legacy and "--extra-create-metadata" in pod.args(provisioner), ref(sc)


def test_example_volumes_are_well_formed() -> None:
    objs = [o for objs_ in load_examples().values() for o in objs_]
    secret = example_secret()["metadata"]
    pvs = find(objs, "PersistentVolume")
    assert pvs
    for pv in pvs:
        csi_source = pv["spec"]["csi"]
        parse_volume_id(csi_source["volumeHandle"])
        for key in ("nodeStageSecretRef", "nodePublishSecretRef"):
            assert csi_source[key] == {"name": secret["name"], "namespace": secret["namespace"]}
        claims = [c for c in find(objs, "PersistentVolumeClaim")
                  if c["spec"].get("volumeName") == pv["metadata"]["name"]]
        assert len(claims) == 1 and claims[0]["spec"]["storageClassName"] == ""
        assert set(claims[0]["spec"]["accessModes"]) <= set(pv["spec"]["accessModes"])
    read_only = [pv for pv in pvs if pv["spec"]["csi"].get("readOnly")]
    assert read_only and all(pv["spec"]["accessModes"] == ["ReadOnlyMany"] for pv in read_only)
    classes = {sc["metadata"]["name"] for sc in find(render(BASE), "StorageClass")}
    for claim in find(objs, "PersistentVolumeClaim"):
        assert claim["spec"]["storageClassName"] in classes | {""}
    assert any("ReadWriteMany" in c["spec"]["accessModes"] and c["spec"]["storageClassName"]
               for c in find(objs, "PersistentVolumeClaim"))


def test_inline_volume_examples_are_well_formed() -> None:
    examples = load_examples()
    inline = [volume["csi"] for pod in find(examples["inline-pod.yaml"], "Pod") for volume in pod["spec"]["volumes"]
              if "csi" in volume]
    assert inline
    secrets_here = {s["metadata"]["name"] for s in find(examples["inline-pod.yaml"], "Secret")}
    for source in inline:
        assert source["driver"] == DRIVER_NAME
        params = parse_parameters(source["volumeAttributes"], "volumeAttributes key")  # what NodePublish checks
        assert params.shared_bucket and params.path.pattern is None
        assert source["nodePublishSecretRef"]["name"] in secrets_here  # resolved in the pod's namespace
    driver = one(render(BASE), "CSIDriver")
    assert "Ephemeral" in driver["spec"]["volumeLifecycleModes"] and driver["spec"]["podInfoOnMount"]


# What Kubernetes 1.11 lacks, of what these manifests could plausibly use: API versions
# that came later, and fields added after 1.11 (first release in the comment).
APIS_1_11 = {"v1", "apps/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1", "security.openshift.io/v1"}
KINDS_AFTER_1_11 = {"CSIDriver", "CSINode", "CSIStorageCapacity", "VolumeAttributesClass", "Lease"}
FIELDS_AFTER_1_11 = {
    "runtimeClassName": "1.12", "procMount": "1.12", "enableServiceLinks": "1.13", "windowsOptions": "1.14",
    "preemptionPolicy": "1.15", "startupProbe": "1.16", "ephemeralContainers": "1.16",
    "topologySpreadConstraints": "1.16", "overhead": "1.16", "volumeLifecycleModes": "1.16",
    "fsGroupChangePolicy": "1.18", "fsGroupPolicy": "1.19", "seccompProfile": "1.19",
    "setHostnameAsFQDN": "1.19", "storageCapacity": "1.19", "tokenRequests": "1.20",
    "requiresRepublish": "1.20", "hostUsers": "1.25", "seLinuxMount": "1.25",
}


def fields_after_1_11(node: Any, path: str) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in FIELDS_AFTER_1_11 and path.split(".")[-1] not in ("parameters", "data", "labels", "annotations"):
                found.append(f"{path}.{key} (Kubernetes {FIELDS_AFTER_1_11[key]})")
            found += fields_after_1_11(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += fields_after_1_11(value, f"{path}[{i}]")
    return found


def test_openshift_3_11_uses_only_kubernetes_1_11_apis() -> None:
    overlay = DEPLOY / "openshift-3.11"
    objs = render(overlay) + [o for objs_ in load_examples().values() for o in objs_]
    problems = []
    for obj in objs:
        if obj["apiVersion"] not in APIS_1_11 or obj["kind"] in KINDS_AFTER_1_11:
            problems.append(f"{ref(obj)}: {obj['apiVersion']} {obj['kind']} does not exist in Kubernetes 1.11")
        problems += fields_after_1_11(obj, ref(obj))
        if obj["kind"] == "StorageClass":
            problems += [f"{ref(obj)}: {k}" for k in obj.get("parameters", {}) if k.startswith(PROVISIONER_PREFIX)]
    for pod in workloads(render(overlay)):
        priority = pod.spec.get("priorityClassName", "")
        if priority.startswith("system-") and pod.owner["metadata"].get("namespace") != "kube-system":
            problems.append(f"{ref(pod.owner)}: {priority} is admitted only in kube-system before 1.17")
    assert not problems, "\n".join(problems)


def test_openshift_3_11_runs_an_attacher_instead_of_a_csidriver() -> None:
    objs = render(DEPLOY / "openshift-3.11")
    assert not find(objs, "CSIDriver")
    pod, _ = controller_pod(objs)
    images = {image_name(c["image"]): c["image"] for c in pod.containers()}
    assert "csi-attacher" in images and "csi-resizer" not in images
    assert all(re.search(r":v0\.4\.\d+$", image) for name, image in images.items() if name != DRIVER_IMAGE)
    rules = [rule for role in find(objs, "ClusterRole") for rule in role["rules"]]
    assert any("volumeattachments" in r["resources"] and "update" in r["verbs"] for r in rules)
    assert any("nodes" in r["resources"] and "update" in r["verbs"] for r in rules), "driver-registrar v0.4"


def test_modern_overlays_skip_attach() -> None:
    for overlay in OVERLAYS:
        objs = render(overlay)
        if provisioner_major(objs) == 0:
            continue
        driver = one(objs, "CSIDriver", DRIVER_NAME)["spec"]
        assert driver["attachRequired"] is False and driver["podInfoOnMount"] is True
        assert driver["fsGroupPolicy"] == "File"
        pod, _ = controller_pod(objs)
        names = {image_name(c["image"]) for c in pod.containers()}
        assert {"csi-provisioner", "csi-resizer", LIVENESS} <= names and "csi-attacher" not in names
        for container in pod.containers():
            if image_name(container["image"]) in ("csi-provisioner", "csi-resizer"):
                assert "--leader-election" in flags(pod.args(container))


def test_openshift_grants_the_scc_to_the_node_service_account() -> None:
    for name in ("openshift", "openshift-3.11"):
        objs = render(DEPLOY / name)
        scc = one(objs, "SecurityContextConstraints")
        assert scc["allowPrivilegedContainer"] is True and scc["allowHostDirVolumePlugin"] is True
        assert "hostPath" in scc["volumes"]
        for pod, _ in (node_pod(objs), mounter_pod(objs)):
            account = pod.spec["serviceAccountName"]
            namespace = pod.owner["metadata"]["namespace"]
            assert f"system:serviceaccount:{namespace}:{account}" in scc["users"]
            volume_types = {next(k for k in v if k != "name") for v in pod.spec["volumes"]}
            assert volume_types <= set(scc["volumes"])
