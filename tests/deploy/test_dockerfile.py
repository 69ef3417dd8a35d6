"""Static checks of the Dockerfile (no container engine runs here): its stages install what
scripts/install.sh installs, split into what building needs and what running needs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.deploy import debian
from tests.deploy.kube import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
INSTALL_SH = REPO / "scripts" / "install.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None or shutil.which("ldd") is None,
                                reason="needs a Debian system set up by scripts/install.sh (dpkg-query, ldd)")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def apt_installs(self) -> set[str]:
        """Packages named after ``apt-get install`` in the stage's RUN lines."""
        packages: set[str] = set()
        for keyword, text in self.instructions:
            if keyword != "RUN":
                continue
            for command in re.split(r"&&|\|\||;|\|", text):
                words = shlex.split(command)
                if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                    packages |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
        return packages

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """``(from stage or None for the build context, sources, destination)`` per COPY."""
        found = []
        for keyword, text in self.instructions:
            if keyword in ("COPY", "ADD"):
                words = shlex.split(text)
                options = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                source = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
                found.append((source, paths[:-1], paths[-1]))
        return found

    def value(self, keyword: str) -> list[str]:
        return [text for k, text in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), words[0])
            stage_name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, stage_name))
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def install_sh_packages() -> set[str]:
    match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", INSTALL_SH.read_text(), re.M)
    assert match, "scripts/install.sh has no APT_PACKAGES=(...) list"
    return set(match[1].split())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = parse_dockerfile(DOCKERFILE.read_text())
    assert len(found) >= 2, "expected a multi-stage build"
    return found


def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def builders(stages: list[Stage]) -> list[Stage]:
    """The stages the final stage copies from."""
    names = {source for source, _, _ in final(stages).copies() if source}
    found = [s for s in stages[:-1] if s.name in names]
    assert found, "the final stage copies from no earlier stage"
    return found


# Needed only as a container's PID 1: it reaps the obsfs daemons, which detach from `obsfs mount`
# and are re-parented to PID 1. On a host, init does that, so install.sh has no use for it.
CONTAINER_ONLY = {"tini"}


def test_final_stage_installs_what_install_sh_installs_for_running(stages: list[Stage]) -> None:
    installed_here, runtime = install_sh_packages(), debian.runtime_needs()
    packages = final(stages).apt_installs() - CONTAINER_ONLY
    assert packages <= installed_here, f"not in scripts/install.sh: {sorted(packages - installed_here)}"
    missing = runtime - debian.closure(packages)
    assert not missing, f"obsfs needs {sorted(missing)} at run time; the final stage does not install it"
    for package in packages:  # nothing that running does not need
        assert debian.closure({package}) & runtime, f"the final stage installs {package}, which obsfs does not use"
    assert installed_here & runtime <= packages
    build_only = {p for p in packages if debian.installed()[p].section in ("devel", "libdevel")}
    assert not build_only | (packages & debian.build_needs()), f"build-only packages in the image: {build_only}"


def test_build_stage_has_what_compiling_the_extensions_needs(stages: list[Stage]) -> None:
    installed_here, build = install_sh_packages(), debian.build_needs()
    packages = set().union(*(stage.apt_installs() for stage in builders(stages)))
    assert packages <= installed_here, f"not in scripts/install.sh: {sorted(packages - installed_here)}"
    missing = build - debian.closure(packages)
    assert not missing, f"compiling pyfuse3 needs {sorted(missing)}; the build stage does not install it"
    for package in packages:
        assert debian.closure({package}) & build, f"the build stage installs {package} for nothing"
    assert not packages & final(stages).apt_installs()


def test_python_comes_from_the_base_image(stages: list[Stage]) -> None:
    """install.sh's python3* packages provide the interpreter and its headers; in the image the
    official python image does, of the version the project runs on and the Debian it targets."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    codename = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M)
    assert codename, "not a Debian system"
    for stage in stages:
        assert stage.image == f"python:{version}-slim-{codename[1]}", stage.image
    assert {p for p in install_sh_packages() if p.startswith("python3")}, "install.sh installs Python differently"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(version)


def dockerignore_includes(path: str) -> bool:
    """Whether the build context contains ``path``, by .dockerignore's rules (last match wins;
    a pattern that matches a directory covers what is inside)."""
    included = True
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*") \
            .replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            included = negate
    return included


def test_build_context_holds_the_package_and_nothing_else(stages: list[Stage]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in include}
    needed = {"pyproject.toml", project["project"]["readme"]} | packages
    copied = {Path(source).as_posix().rstrip("/") for stage in builders(stages)
              for origin, sources, _ in stage.copies() if origin is None for source in sources}
    assert needed <= copied, f"the build stage does not copy {sorted(needed - copied)}"
    for name in needed:
        assert (REPO / name).exists()
        sample = name if (REPO / name).is_file() else next(p.relative_to(REPO).as_posix()
                                                           for p in (REPO / name).rglob("*.py"))
        assert dockerignore_includes(sample), f".dockerignore leaves out {sample}"
    for private in (".venv/bin/python", ".git/config", "tests/conftest.py", "obsfs/__pycache__/fs.cpython-311.pyc"):
        assert not dockerignore_includes(private), f".dockerignore lets {private} into the build context"
    assert not [c for c in final(stages).copies() if c[0] is None], "the final stage copies from the build context"


def test_entrypoint_is_the_installed_console_script(stages: list[Stage]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["obsfs-csi"] == "csi.main:main"
    assert "obsfs" in scripts, "the node service starts `obsfs mount`"
    assert scripts["obsfs-mounter"] == "csi.mounterd:main", "deploy/kubernetes/mounter.yaml runs it"
    assert any("obsfs-mounter --help" in run for run in final(stages).value("RUN")), "the build checks it starts"
    entrypoint = final(stages).value("ENTRYPOINT")
    assert [json.loads(e) for e in entrypoint] == [["tini", "--", "obsfs-csi"]]
    assert final(stages).apt_installs() >= CONTAINER_ONLY
    venvs = {m[1] for stage in builders(stages) for run in stage.value("RUN")
             for m in re.finditer(r"-m venv (\S+)", run)}
    assert len(venvs) == 1
    venv = venvs.pop()
    assert any(source == venv and dest == venv for _, sources, dest in final(stages).copies() for source in sources)
    assert any(re.search(rf"PATH={re.escape(venv)}/bin:", env) for env in final(stages).value("ENV"))
