"""The install is reproducible: every Python package comes from requirements/*.txt at an exact
version with its file hashes; install.sh and the Dockerfile install only from there, with
--require-hashes; the venv the tests run in is exactly dev.txt; and nothing the project runs reads
outside the checkout."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.kube import REPO
from tests.deploy.test_dockerfile import DOCKERFILE, DOCKERIGNORE, INSTALL_SH, dockerignore_includes, parse_dockerfile

LOCKS = REPO / "requirements"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: frozenset[str]

    def applies_here(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(name: str) -> list[Pin]:
    """The pins of a lock file in pip's requirements format, as scripts/lock.sh writes it."""
    text = (LOCKS / name).read_text()
    pins = []
    for entry in re.split(r"\n(?=\S)", text):
        if entry.startswith("#") or not entry.strip():
            continue
        head = entry.split("\\", 1)[0].strip()
        requirement, _, marker = head.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", requirement.strip())
        assert match, f"{name}: not an exact pin: {head!r}"
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
        pins.append(Pin(str(canonicalize_name(match[1])), match[2], Marker(marker) if marker.strip() else None, hashes))
    assert pins, f"{name} pins nothing"
    return pins


def here(pins: list[Pin]) -> dict[str, Pin]:
    """The pins that this interpreter and platform install, by name (markers pick one per name)."""
    chosen: dict[str, Pin] = {}
    for pin in pins:
        if pin.applies_here():
            assert pin.name not in chosen, f"two pins of {pin.name} apply here"
            chosen[pin.name] = pin
    return chosen


@pytest.mark.parametrize("name", ["dev.txt", "runtime.txt", "build.txt", "tools.txt"])
def test_every_pin_is_exact_and_hashed(name: str) -> None:
    for pin in read_lock(name):
        assert pin.hashes, f"{name}: {pin.name} has no --hash"


@pytest.mark.parametrize("name", ["runtime.txt", "build.txt"])
def test_smaller_locks_agree_with_dev_lock(name: str) -> None:
    """The image (runtime.txt) and the tests (dev.txt) run the same versions of the same files."""
    dev = {(p.name, p.version): p.hashes for p in read_lock("dev.txt")}
    for pin in read_lock(name):
        assert (pin.name, pin.version) in dev, f"{name} pins {pin.name}=={pin.version}; dev.txt does not"
        assert pin.hashes == dev[pin.name, pin.version], f"{pin.name}: other files in {name} than in dev.txt"


@pytest.mark.parametrize(("lock", "groups"), [("runtime.txt", []), ("dev.txt", ["dev", "bench"])])
def test_locks_satisfy_the_ranges_in_pyproject(lock: str, groups: list[str]) -> None:
    pins = here(read_lock(lock))
    wanted = list(PYPROJECT["project"]["dependencies"]) + list(PYPROJECT["build-system"]["requires"])
    for group in groups:
        wanted += PYPROJECT["project"]["optional-dependencies"][group]
    for line in wanted:
        requirement = Requirement(line)
        name = str(canonicalize_name(requirement.name))
        assert name in pins, f"{lock} has no pin for {name}: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), \
            f"{lock} pins {name}=={pins[name].version}, outside pyproject's {requirement}: run scripts/lock.sh"


def test_this_venv_is_exactly_dev_lock() -> None:
    """What the tests ran with is what a fresh machine gets: nothing more, nothing less, no other version."""
    pinned = {name: pin.version for name, pin in here(read_lock("dev.txt")).items()}
    installed = {str(canonicalize_name(d.metadata["Name"])): d.version for d in metadata.distributions()}
    installed.pop(str(canonicalize_name(PYPROJECT["project"]["name"])))
    installed.pop("pip", None)  # comes with the venv itself
    assert installed == pinned, "the venv differs from requirements/dev.txt: run scripts/install.sh"


def test_grpc_floor_in_pyproject_covers_the_checked_in_stubs() -> None:
    """Generated stubs refuse a runtime older than their generator, so a library user's install must not pick one."""
    stubs = REPO / "csi" / "v1"
    generated = re.search(r"^GRPC_GENERATED_VERSION = '([\d.]+)'", (stubs / "csi_pb2_grpc.py").read_text(), re.M)
    protobuf = re.search(r"^# Protobuf Python Version: ([\d.]+)", (stubs / "csi_pb2.py").read_text(), re.M)
    assert generated and protobuf
    dependencies = map(Requirement, PYPROJECT["project"]["dependencies"])
    floors = {str(canonicalize_name(r.name)): r.specifier for r in dependencies}
    for name, version in (("grpcio", generated[1]), ("protobuf", protobuf[1])):
        lower = [Version(s.version) for s in floors[name] if s.operator == ">="]
        assert lower and max(lower) >= Version(version), \
            f"pyproject allows {name} {floors[name]}, but the stubs need >= {version}"


def test_install_sh_installs_only_from_the_locks() -> None:
    text = INSTALL_SH.read_text()
    pip_array = re.search(r"^\s*pip=\((.*)\)$", text, re.M)
    assert pip_array and "--no-deps" in pip_array[1], "install.sh must not let pip resolve anything itself"
    installs = [line.strip() for line in text.splitlines() if '"${pip[@]}"' in line]
    assert [re.search(r"-r (\S+)|-e \.", line)[0] for line in installs] == [  # type: ignore[index]
        "-r requirements/build.txt", "-r requirements/dev.txt", "-e ."]
    for line in installs[:2]:
        assert "--require-hashes" in line, f"install.sh installs without hashes: {line}"
    for line in installs[1:]:
        assert "--no-build-isolation" in line, f"an isolated build would fetch unlocked build tools: {line}"


def test_dockerfile_installs_only_from_the_locks() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    runs = [text for stage in stages for keyword, text in stage.instructions if keyword == "RUN"]
    pip_commands = [c.strip() for run in runs for c in run.split("&&") if re.search(r"\bpip install\b", c)]
    assert pip_commands, "the Dockerfile installs nothing with pip"
    for command in pip_commands:
        assert "--no-deps" in command, f"pip may resolve on its own: {command}"
        assert "--require-hashes" in command or "--no-build-isolation" in command, command
        if "--require-hashes" in command:
            source = re.search(r"-r (\S+)", command)
            assert source and source[1] in ("requirements/build.txt", "requirements/runtime.txt"), command
    assert any("runtime.txt" in c for c in pip_commands)
    for lock in ("requirements/build.txt", "requirements/runtime.txt"):
        assert dockerignore_includes(lock), f".dockerignore leaves out {lock}"
    assert DOCKERIGNORE.exists()


OUTSIDE = re.compile(r"\.\./shared|/ \"shared\"|parents\[\d\] / \"shared\"|/work/")


@pytest.mark.parametrize("top", ["tests", "bench", "scripts", "obsfs", "csi", ".ci"])
def test_nothing_reads_outside_the_checkout(top: str) -> None:
    for path in sorted((REPO / top).rglob("*")):
        if path.is_file() and path.suffix in ("", ".py", ".sh") and path != Path(__file__):
            found = OUTSIDE.search(path.read_text(errors="replace"))
            assert not found, f"{path.relative_to(REPO)} reads outside the repository: {found[0]!r}"
