"""The layers stay apart: the agent and the wire contract run without Django, and the control
plane never imports the agent."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import moorage

PACKAGE = Path(moorage.__file__).parent
#: The control plane: the Django apps and their project package.
CONTROL_PLANE = ("accounts", "apps", "audit", "config", "credentials", "deployments", "regions",
                 "web")


def _imports(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_agent_the_protocol_and_the_agent_command_do_not_import_django() -> None:
    code = (
        "import sys, moorage.agent, moorage.agent.backoff, moorage.agent.client, "
        "moorage.agent.config, moorage.agent.errors, moorage.agent.logs, moorage.protocol, "
        "moorage.protocol.build, moorage.protocol.enums, moorage.agent.replica, "
        "moorage.agent.sync, moorage.agent.runtime, moorage.agent.runtime.docker, "
        "moorage.agent.deployer, moorage.cli.agent; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("app", CONTROL_PLANE)
def test_the_control_plane_never_imports_the_agent(app: str) -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imports(path)
                                               if m.startswith("moorage.agent"))
        for path in (PACKAGE / app).rglob("*.py") if "tests" not in path.parts
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_protocol_imports_neither_side() -> None:
    for path in (PACKAGE / "protocol").rglob("*.py"):
        sides = [m for m in _imports(path)
                 if m.startswith(("moorage.agent", "django"))
                 or m.split(".")[:2] in [["moorage", app] for app in CONTROL_PLANE]]
        assert sides == [], path


def test_the_replica_does_not_import_the_builder() -> None:
    assert not {m for m in _imports(PACKAGE / "agent" / "replica.py")
                if m.startswith("moorage.agent.builder")}
