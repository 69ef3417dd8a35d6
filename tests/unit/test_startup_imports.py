"""What the daemon imports before its mount can answer: every module costs start-up latency
(``docs/survival.md``), so those it does not need there must stay out of the import graph."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement`` (a subprocess: this one has
    imported everything the tests need)."""
    out = subprocess.run([sys.executable, "-c", f"{statement}; import sys; print(*sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["prometheus_client", "obsfs.keeper"])
def test_the_daemon_does_not_import(module: str) -> None:
    # obsfs.cli is what the daemon is forked from; obsfs.mount is the rest of what it imports.
    loaded = loaded_by("import obsfs.cli, obsfs.mount")
    assert "obsfs.mount" in loaded
    assert module not in loaded and module not in {name.split(".")[0] for name in loaded}
