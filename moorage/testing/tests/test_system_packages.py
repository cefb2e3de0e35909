"""A fresh machine gets every program the tests run: the fixtures' programs, their Debian
packages (moorage.testing.programs) and the list scripts/install.sh installs agree."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

from moorage.testing.programs import PROGRAMS, find_program

REPO = Path(__file__).resolve().parents[3]
PACKAGE_LIST = REPO / "scripts" / "system-packages.txt"
INSTALL = REPO / "scripts" / "install.sh"


def _listed_packages() -> list[str]:
    """The packages of scripts/system-packages.txt: one a line, ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in PACKAGE_LIST.read_text().splitlines())
    return [line for line in lines if line]


def _constants(tree: ast.Module) -> dict[str, str]:
    """The module's top-level ``NAME = "text"`` assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _program_argument(node: ast.expr, constants: dict[str, str], where: str) -> str:
    """The program a ``require_binary(...)`` call asks for: a literal, or a module constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    raise AssertionError(f"{where}: require_binary's argument must be a string literal or a "
                         "module-level string constant, so this test can read it")


def required_programs() -> dict[str, list[str]]:
    """Every program some ``require_binary`` call in the code base asks for → where."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "moorage").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        constants = _constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require_binary" \
                    and node.args and not node.keywords:
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                program = _program_argument(node.args[0], constants, where)
                found.setdefault(program, []).append(where)
    return found


def test_every_program_a_fixture_requires_comes_from_a_listed_package() -> None:
    required = required_programs()
    # The fixtures of every real component are found (a scan finding nothing proves nothing).
    for program in ("dockerd", "docker-registry", "/usr/bin/chromium", "/bin/busybox", "git",
                    "/usr/bin/skopeo"):
        assert program in required, sorted(required)
    unknown = {program: where for program, where in required.items() if program not in PROGRAMS}
    assert unknown == {}, "programs without a package in moorage.testing.programs.PROGRAMS"
    listed = set(_listed_packages())
    missing = {program: package for program, package in PROGRAMS.items()
               if package not in listed}
    assert missing == {}, f"packages missing from {PACKAGE_LIST.relative_to(REPO)}"


def test_the_install_script_installs_exactly_the_list() -> None:
    packages = _listed_packages()
    assert len(packages) == len(set(packages))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", p) for p in packages), packages
    assert "skopeo" in packages  # the first one a fresh machine was found without
    result = subprocess.run(["bash", str(INSTALL), "--list-packages"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == packages


def _dpkg_owner(path: str) -> str | None:
    """The package dpkg says installed ``path`` (under /usr-merge, either spelling)."""
    candidates = [path, os.path.realpath(path)]
    for candidate in list(candidates):
        if candidate.startswith("/usr/"):
            candidates.append(candidate.removeprefix("/usr"))
        else:
            candidates.append("/usr" + candidate)
    for candidate in candidates:
        result = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True,
                                text=True, timeout=30, check=False)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def _depends(package: str) -> set[str]:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", package],
        capture_output=True, text=True, timeout=30, check=False)
    names = set()
    for clause in result.stdout.split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
            if name:
                names.add(name)
    return names


def _provided_through(package: str, owner: str, depth: int = 4) -> bool:
    """Whether ``owner`` is ``package`` or one of its (installed) dependencies."""
    seen: set[str] = set()
    level = {package}
    for _ in range(depth + 1):
        if owner in level:
            return True
        seen |= level
        level = {dep for name in level for dep in _depends(name)} - seen
    return False


def test_dpkg_agrees_each_program_comes_from_its_package() -> None:
    """The table is right on this (Debian) machine: no guessed package names."""
    wrong = {}
    for program, package in PROGRAMS.items():
        path = find_program(program)
        assert path is not None, f"{program} is not installed (apt-get install -y {package})"
        owner = _dpkg_owner(path)
        if owner is None or not _provided_through(package, owner):
            wrong[program] = (package, owner)
    assert wrong == {}, "program: (package in the table, package dpkg says owns it)"
