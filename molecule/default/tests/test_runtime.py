"""How each route got its GPU runtime: dpkg's own log of what was installed, removed and
purged, in which order, across converge, idempotence and both check runs."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import LEGACY1, VENDORS

DOWNLOADS = "/var/cache/intel-gpu-runtime"
INTEL_DRIVERS = ("intel-opencl-icd", "intel-opencl-icd-legacy1")


def test_platform(host, platform):
    assert host.system_info.codename == platform.codename


def test_packages(host, platform):
    for name in platform.installed:
        assert host.package(name).is_installed, name
    for name in platform.absent:
        assert not host.package(name).is_installed, name


def test_legacy1_versions(host, platform):
    if "intel-opencl-icd-legacy1" not in platform.installed:
        pytest.skip("not the legacy1 route")
    for name, version in LEGACY1.items():
        assert host.package(name).version == version, name


def test_one_intel_opencl_driver(host, platform):
    # The ICD files a loader reads, and the library each names: exactly the one of the
    # route, none where the distribution packages none. Purged, not just removed: a
    # removed package's conffile would still register its driver.
    found = host.check_output(f"find {VENDORS} -name '*.icd' 2>/dev/null || true").split()
    assert sorted(found) == sorted(platform.icd_files)
    for path, library in platform.icd_files.items():
        assert host.file(path).content_string.strip() == library
        assert host.file(library).exists


def dpkg_actions(host):
    """[(action, package, old version, new version)] from /var/log/dpkg.log, in order."""
    actions = []
    for line in host.file("/var/log/dpkg.log").content_string.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[2] in {"install", "upgrade", "remove", "purge"}:
            actions.append((fields[2], fields[3].split(":")[0], fields[4], fields[5]))
    return actions


def installed_over_time(actions):
    """Which Intel OpenCL drivers were installed together at some point."""
    present: set[str] = set()
    together = []
    for action, package, _, _ in actions:
        if package not in INTEL_DRIVERS:
            continue
        if action in {"install", "upgrade"}:
            present.add(package)
        else:
            present.discard(package)
        together.append(frozenset(present))
    return together


def test_never_two_intel_opencl_drivers(host):
    assert all(len(drivers) <= 1 for drivers in installed_over_time(dpkg_actions(host)))


def test_legacy1_route(host, platform):
    if "intel-opencl-icd-legacy1" not in platform.installed:
        pytest.skip("not the legacy1 route")
    actions = dpkg_actions(host)
    # prepare.yml installed the distribution's driver once; the role purged it once and
    # never installed it again (the old role installed and removed it on every run).
    assert [a[0] for a in actions if a[1] == "intel-opencl-icd"] == ["install", "remove", "purge"]
    # The compiler it pulled in is gone too, configuration and all: dpkg knows no trace.
    for replaced in ("intel-opencl-icd", "libigc1", "libigdfcl1"):
        assert [a[0] for a in actions if a[1] == replaced][0] == "install", replaced
        assert host.run(f"dpkg-query -W {replaced}").rc == 1, replaced
    # Installed once each (idempotence), in the listed order, after the purge.
    legacy = [a for a in actions if a[0] in {"install", "upgrade"} and LEGACY1.get(a[1]) == a[3]]
    assert [a[1] for a in legacy] == list(LEGACY1)
    # gmmlib 22.5.0 upgrades the distribution's 22.3 in place.
    assert legacy[0][0] == "upgrade" and legacy[0][2].startswith("22.3.")
    last_purge = max(i for i, a in enumerate(actions) if a[:2] == ("purge", "intel-opencl-icd"))
    assert last_purge < actions.index(legacy[0])


def test_legacy1_downloads_match_their_checksums(host, platform):
    if "intel-opencl-icd-legacy1" not in platform.installed:
        pytest.skip("not the legacy1 route")
    listing = json.loads(host.file("/srv/legacy1-mirror/debs.json").content_string)
    assert len(listing) == len(LEGACY1)
    for item in listing:
        name = item["url"].rsplit("/", 1)[1]
        assert item["url"] == f"https://127.0.0.1:8443/{name}"
        local = host.file(f"{DOWNLOADS}/{name}")
        assert (local.user, local.mode) == ("root", 0o644)
        assert hashlib.sha256(local.content).hexdigest() == item["sha256"]


def test_distribution_routes_install_no_legacy1_package(host, platform):
    if "intel-opencl-icd-legacy1" in platform.installed:
        pytest.skip("the legacy1 route")
    touched = {a[1] for a in dpkg_actions(host)}
    assert not touched & (set(LEGACY1) - {"libigdgmm12"})
    assert not host.file(DOWNLOADS).exists


PINS = {
    "ov-llm-bookworm": {
        "intel-opencl-icd": "22.43.24595.41",
        "libigc1": "1.0.12504.6",
        "libigdfcl1": "1.0.12504.6",
    },
}
PREFERENCES = "/etc/apt/preferences.d/intel-gpu-runtime"


def test_distribution_runtime_is_held_at_its_versions(host):
    pins = PINS.get(host.backend.name, {})
    preferences = host.file(PREFERENCES)
    if not pins:
        # trixie packages no Intel runtime to pin; legacy1 brings its own versions.
        assert not preferences.exists
        return
    text = preferences.content_string
    for name, version in pins.items():
        assert f"Package: {name}\nPin: version {version}*\nPin-Priority: 1001" in text
        assert host.package(name).version.startswith(version), name
    # apt itself takes the pin: the candidate is the held version.
    policy = host.check_output("apt-cache policy intel-opencl-icd")
    assert "Candidate: 22.43.24595.41" in policy
