"""The lower bounds in pyproject.toml are the versions CI tests (scripts/check_oldest.sh)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lower_bounds() -> dict[str, str]:
    """Package -> the version after ``>=`` for every requirement of pyproject.toml that has one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for group in project["optional-dependencies"].values()
                                                for r in group)]
    bounds = {}
    for requirement in requirements:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
        if match:
            bounds[match.group(1).lower()] = match.group(2)
    return bounds


def test_the_oldest_versions_ci_tests_are_pyprojects_lower_bounds() -> None:
    script = (ROOT / "scripts" / "check_oldest.sh").read_text()
    pins = dict(re.findall(r'"([a-z-]+)==([0-9.]+)"', script.split("OLDEST=(", 1)[1].split(")", 1)[0]))
    assert pins, "scripts/check_oldest.sh lists no OLDEST pins"
    bounds = lower_bounds()
    for package, version in pins.items():
        assert bounds.get(package) == version, (package, version, bounds.get(package))


def test_libraries_whose_internals_we_drive_have_an_upper_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["serve"]]
    for package in ("transformers", "fastapi", "starlette"):
        spec = next(r for r in requirements if r.lower().startswith(package))
        assert "<" in spec, spec
