"""What this Debian machine knows about its packages and about what obsfs needs from them.

The Dockerfile test compares the image's apt lists with scripts/install.sh without a list of
its own: it asks dpkg which package owns each library the compiled extensions load, each
program obsfs runs, and each compiler, tool and header the extensions are built with. This
works because scripts/install.sh has installed all of them here.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.kube import REPO

PROJECT = "obsfs-fuse"
SOURCES = ("obsfs", "csi")
_SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


@dataclass(frozen=True)
class Package:
    name: str
    essential: bool
    priority: str
    section: str
    depends: tuple[tuple[str, ...], ...]  # each entry: alternatives
    provides: tuple[str, ...]


def _names(field: str) -> tuple[tuple[str, ...], ...]:
    """``a (>= 1), b:any | c`` -> ``(("a",), ("b", "c"))``."""
    groups = []
    for group in filter(None, (g.strip() for g in field.split(","))):
        groups.append(tuple(re.sub(r"\s*\(.*?\)|:\w+|\s*\[.*?\]", "", alt).strip() for alt in group.split("|")))
    return tuple(groups)


@functools.cache
def installed() -> dict[str, Package]:
    fmt = "${db:Status-Status}\t${Package}\t${Essential}\t${Priority}\t${Section}\t${Depends}\t${Pre-Depends}" \
          "\t${Provides}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout
    packages = {}
    for line in out.splitlines():
        status, name, essential, priority, section, depends, pre_depends, provides = line.split("\t")
        if status == "installed":
            packages[name] = Package(name, essential == "yes", priority, section,
                                     _names(depends) + _names(pre_depends),
                                     tuple(alt for group in _names(provides) for alt in group))
    return packages


@functools.cache
def _providers() -> dict[str, tuple[str, ...]]:
    result: dict[str, list[str]] = {}
    for package in installed().values():
        for virtual in package.provides:
            result.setdefault(virtual, []).append(package.name)
    return {k: tuple(v) for k, v in result.items()}


def closure(names: set[str] | frozenset[str]) -> frozenset[str]:
    """The packages and everything they depend on, following the installed alternative."""
    packages, providers = installed(), _providers()
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in packages[name].depends if name in packages else ():
            choice = next((alt for alt in group if alt in packages),
                          next((p for alt in group for p in providers.get(alt, ())), None))
            if choice is not None:
                todo.append(choice)
    return frozenset(seen)


@functools.cache
def base_system() -> frozenset[str]:
    """What every Debian image has: debootstrap's minbase installs the Essential and
    Priority: required packages (and apt), with their dependencies."""
    return closure({p.name for p in installed().values() if p.essential or p.priority == "required"})


def _variants(path: str) -> list[str]:
    """``path`` as dpkg may have recorded it on a merged-/usr system."""
    real = str(Path(path).resolve())
    found = [path, real]
    for candidate in (path, real):
        if candidate.startswith("/usr/"):
            found.append(candidate[len("/usr"):])
        elif re.match(r"/(s?bin|lib\w*)/", candidate):
            found.append("/usr" + candidate)
    return list(dict.fromkeys(found))


def owner(path: str) -> str:
    """The installed package that holds ``path``."""
    for candidate in _variants(path):
        out = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    raise LookupError(f"no installed package holds {path}")


def runtime_distributions() -> list[metadata.Distribution]:
    """The project's distribution and everything it requires at run time (no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [PROJECT]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def built_here(dist: metadata.Distribution) -> bool:
    """Built from source on this machine (platform tag linux_*), not a manylinux wheel that
    carries its own libraries."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    return any(re.search(r"-linux_", tag) for tag in tags)


def compiled_extensions() -> list[Path]:
    return [Path(str(dist.locate_file(f))) for dist in runtime_distributions() if built_here(dist)
            for f in dist.files or () if str(f).endswith(".so")]


def linked_libraries(extension: Path) -> list[str]:
    out = subprocess.run(["ldd", str(extension)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"=>\s+(/\S+)", out)


def invoked_programs() -> set[str]:
    """Programs obsfs and the CSI driver run: the first item of argv lists given literally to
    subprocess.run/Popen/... in their sources."""
    programs = set()
    for source in SOURCES:
        for path in (REPO / source).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in _SUBPROCESS_CALLS and isinstance(node.func.value, ast.Name) \
                        and node.func.value.id == "subprocess" and node.args \
                        and isinstance(node.args[0], ast.List | ast.Tuple) and node.args[0].elts \
                        and isinstance(node.args[0].elts[0], ast.Constant) \
                        and isinstance(node.args[0].elts[0].value, str):
                    programs.add(node.args[0].elts[0].value)
    return programs


def program_owner(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise LookupError(f"{program} is not installed here; run scripts/install.sh")
    return owner(path)


@functools.cache
def runtime_needs() -> frozenset[str]:
    """Packages the installed obsfs needs at run time beyond a Debian base image."""
    needed = {owner(lib) for ext in compiled_extensions() for lib in linked_libraries(ext)}
    needed |= {program_owner(p) for p in invoked_programs()}
    return frozenset(needed - base_system())


def dev_package(library: str) -> str:
    """The package with the link-time name of a shared library (libfoo.so.3 -> libfoo.so)."""
    stem = re.sub(r"\.so(\.\d+)*$", ".so", Path(library).name)
    for directory in _variants(str(Path(library).parent)):
        candidate = Path(directory) / stem
        if candidate.is_symlink() or candidate.exists():
            return owner(str(candidate))
    raise LookupError(f"no development file {stem} for {library}; is its -dev package installed?")


@functools.cache
def build_needs() -> frozenset[str]:
    """Packages compiling the extensions needs beyond the base system and Python itself: the C
    compiler Python builds extensions with, pkg-config (pyfuse3's setup.py asks it for fuse3's
    flags), and the development package of each library an extension links against."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    needed = {program_owner(compiler), program_owner("pkg-config")}
    for extension in compiled_extensions():
        for library in linked_libraries(extension):
            if owner(library) not in base_system():
                needed.add(dev_package(library))
    return frozenset(needed - base_system())

