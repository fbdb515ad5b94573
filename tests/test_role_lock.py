"""The ov_server role's hashed lock (roles/ov_server/files/requirements.lock, `make lock`)
against pyproject.toml: every runtime dependency and the build backend pinned within their
ranges, each pin with its sha256 digests, so that pip --require-hashes can install it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "roles/ov_server/files/requirements.lock"
# The Pythons the role meets: Debian 12 and 13 in Molecule, Ubuntu 24.04 on the Mac mini.
PYTHONS = ("3.11", "3.12", "3.13")


def locked() -> dict[str, list[tuple[str, Marker | None, int]]]:
    """name -> [(version, marker, number of hashes)]: a name may be pinned per Python."""
    pins: dict[str, list[tuple[str, Marker | None, int]]] = {}
    current: list[tuple[str, Marker | None, int]] | None = None
    for line in LOCK.read_text().splitlines():
        text = line.strip().rstrip("\\").strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("--hash=sha256:"):
            assert current is not None
            version, marker, count = current[-1]
            current[-1] = (version, marker, count + 1)
            continue
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        current = pins.setdefault(canonicalize_name(requirement.name), [])
        current.append((specifier.version, requirement.marker, 0))
    return pins


def test_every_runtime_dependency_pinned_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    pins = locked()
    for python in PYTHONS:
        environment = {"python_version": python, "python_full_version": f"{python}.0"}
        for requirement in wanted:
            versions = [
                version
                for version, marker, _ in pins.get(canonicalize_name(requirement.name), [])
                if marker is None or marker.evaluate(environment)
            ]
            assert len(versions) == 1, f"{requirement.name} on Python {python}: {versions}"
            assert requirement.specifier.contains(versions[0], prereleases=True), (
                f"{requirement} but the lock has {versions[0]}: run `make lock`"
            )
    assert all(count > 0 for entries in pins.values() for _, _, count in entries)
