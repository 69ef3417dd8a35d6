"""docs/deploy.md says what the manifests do: its commands, versions, paths and the list of
objects the offline validation cannot check stay in step with deploy/."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import yaml

from csi.params import MOUNT_OPTIONS, PATH_PATTERN, ROOT_PREFIX, SHARED_BUCKET
from obsfs.options import MountOptions
from tests.deploy.kube import DEPLOY, DRIVER_IMAGE, REPO, image_name, kustomize, overlays, ref, render
from tests.deploy.test_manifests import VERSIONS, check_node_sockets, validation_problems, workloads

DOC = REPO / "docs" / "deploy.md"


def text() -> str:
    return DOC.read_text()


def section(title: str) -> str:
    """The body of the ``##`` section whose heading starts with ``title``."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text(), re.M | re.S)
    assert match, f"docs/deploy.md has no section {title!r}"
    return match[1]


def code_blocks(body: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", body, re.S)


def commands(block: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", block)
    return [line for line in (ln.strip() for ln in joined.splitlines()) if line and not line.startswith("#")]


def test_title_is_deploy() -> None:
    assert text().startswith("# Deploy\n")


def test_install_takes_five_commands_or_fewer() -> None:
    blocks = code_blocks(section("Install"), "sh")
    assert blocks, "the Install section has no sh block"
    steps = commands(blocks[0])
    assert 1 <= len(steps) <= 5, steps
    rendered = yaml.safe_dump_all(render(DEPLOY / "kubernetes"))
    for step in steps:
        for path in re.findall(r"(?:deploy|scripts)/[\w./-]+", step):
            assert (REPO / path).exists(), f"install step names a missing path: {path}"
        replaced = re.search(r"sed 's\|([^|]+)\|", step)
        if replaced:
            assert replaced[1] in rendered, f"the sed in the install steps matches nothing: {replaced[1]!r}"


def test_troubleshooting_covers_the_four_problems() -> None:
    body = section("Troubleshooting")
    headings = re.findall(r"^### (.+)$", body, re.M)
    for topic in ("PVC stays Pending", "Transport endpoint is not connected", "Permission denied",
                  "not visible in the bucket"):
        assert any(topic.lower() in h.lower() for h in headings), f"no troubleshooting entry on {topic!r}"
    for term in ("upload_delay", "fsync", "obsfs umount", "kubectl describe pvc", "--previous", "fsGroup"):
        assert term in body, f"troubleshooting does not mention {term}"


def test_paths_in_the_docs_exist() -> None:
    for path in set(re.findall(r"`((?:deploy|scripts|tests|docs)/[\w./-]+)`", text())):
        assert (REPO / path).exists(), f"docs/deploy.md names {path}, which does not exist"


def test_sidecar_versions_match_the_manifests() -> None:
    for overlay in overlays():
        for pod in workloads(render(overlay)):
            for container in pod.containers():
                name = image_name(container["image"])
                if name != DRIVER_IMAGE:
                    tag = container["image"].rsplit(":", 1)[1]
                    assert f"{name} {tag}" in text(), f"docs/deploy.md does not list {name} {tag} ({overlay.name})"


def test_unvalidated_objects_are_listed() -> None:
    body = section("Offline checks")
    for overlay in overlays():
        for version in VERSIONS:
            _, unchecked = validation_problems(render(overlay), version)
            for name in unchecked:
                assert f"`{name}` | not checked" in body, f"{name} ({overlay.name}) is not listed as unchecked"
    # Nothing can be checked against 1.11: the table must account for every object of 3.11.
    for obj in render(DEPLOY / "openshift-3.11"):
        assert f"| `{ref(obj)}` |" in body, f"{ref(obj)} of deploy/openshift-3.11 is missing from the table"


def test_kubelet_dir_overlay_in_the_docs_works(tmp_path: Path) -> None:
    snippet = next(b for b in code_blocks(section("Using it"), "yaml") if "kubeletDir=" in b)
    doc = yaml.safe_load(snippet)
    base = os.path.relpath(DEPLOY / "kubernetes", tmp_path)
    doc["resources"] = [base]
    doc["components"] = [f"{base}/components/kubelet-dir"]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(doc))
    wanted = doc["configMapGenerator"][0]["literals"][0].split("=", 1)[1]
    objs = kustomize(tmp_path)
    check_node_sockets(objs)
    assert any(m["mountPath"] == wanted for pod in workloads(objs) for c in pod.containers()
               for m in c.get("volumeMounts", []))


def test_option_names_and_defaults_match_obsfs() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(MountOptions)}
    for name, value in re.findall(r"`(\w+)` \((\d+(?:\.\d+)?)(?: s)?\)", text()):
        assert name in defaults, f"docs/deploy.md names an obsfs option {name} that does not exist"
        assert float(value) == defaults[name], f"docs/deploy.md: {name} defaults to {value}? obsfs: {defaults[name]}"
    paragraph = re.search(r"StorageClass parameters other than(.*?)\(see the README", text(), re.S)
    assert paragraph, "the StorageClass parameter list is gone from docs/deploy.md"
    listed = set(re.findall(r"`(\w+)`", paragraph[1])) - {SHARED_BUCKET, ROOT_PREFIX, PATH_PATTERN}
    assert listed == set(MOUNT_OPTIONS), f"listed {sorted(listed)}, the driver allows {sorted(MOUNT_OPTIONS)}"


def test_storageclass_comment_lists_the_allowed_parameters() -> None:
    comment = (DEPLOY / "kubernetes" / "storageclasses.yaml").read_text().split("\napiVersion:")[0]
    listed = re.search(r"them\):(.*?)\. Values", comment, re.S)
    assert listed, "storageclasses.yaml no longer lists the parameters"
    assert set(re.findall(r"\w+", listed[1])) == set(MOUNT_OPTIONS)
