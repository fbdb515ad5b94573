"""ov-llm-server doctor as the service sees each platform: run through ov-server-doctor,
systemd-run with the unit's own identity, environment and sandbox."""

from __future__ import annotations

import re

import pytest
from conftest import doctor

pytestmark = pytest.mark.service


def test_doctor_runs_as_the_service_in_its_sandbox(host):
    _, report = doctor(host, "--quick")
    identity = report["system"]["identity"]
    assert identity["user"] == "ov-server"
    assert {"ov-server", "render", "video"} <= set(identity["groups"])
    # The unit's NoNewPrivileges=, SystemCallFilter= and empty CapabilityBoundingSet=.
    assert identity["no_new_privs"] is True
    assert identity["seccomp"] is True
    assert identity["capabilities_dropped"] is True
    # A transient unit of systemd-run (below the container's own cgroup here).
    assert re.search(r"/system\.slice/run-[\w-]+\.service$", identity["cgroup"])
    # It read the service's settings (EnvironmentFile=).
    assert (
        report["settings"]["registry_path"]
        == "/var/lib/ov-server/models/converted_models/registry.json"
    )


def test_doctor_on_each_driver_path(host, platform):
    rc, report = doctor(host, "--quick")
    verdict = report["verdict"]
    drivers = [(d["package"], d["version"]) for d in report["runtime"]["opencl_drivers"]]
    assert len(drivers) == len(platform.opencl_drivers)
    for (package, version), (want_package, want_prefix) in zip(
        drivers, platform.opencl_drivers, strict=True
    ):
        assert package == want_package and version.startswith(want_prefix)
    assert sorted(icd["path"] for icd in report["runtime"]["icd_files"]) == sorted(
        platform.icd_files
    )
    assert [d["name"] for d in report["openvino"]["devices"]] == ["CPU"]
    assert verdict["gpu_usable"] is False
    # No container here gets a /dev/dri; a GPU of the machine running them would still
    # show in sysfs, as hidden.
    assert not [node for node in report["gpu_hardware"] if node["in_dev"]]
    code = "render-node-hidden" if report["gpu_hardware"] else "no-render-node"
    codes = {f["code"]: f["severity"] for f in report["findings"]}
    if platform.device == "CPU":
        assert rc == 0
        assert verdict["usable"] is True and verdict["remedy"] is None
        assert codes[code] == "info"
    else:
        # Runtime installed, no GPU device visible: the device cannot serve, the fallback can.
        assert rc == 1
        assert verdict["usable"] is False
        assert verdict["serves_on"] == platform.fallback_device
        assert codes[code] == "error"
        if code == "no-render-node":
            assert "the compute runtime is installed: " + drivers[0][0] in verdict["reason"]
        assert verdict["reason"].endswith(
            f"falls back to OV_FALLBACK_DEVICE={platform.fallback_device}"
        )
        assert verdict["remedy"]


def test_doctor_text_report(host):
    result = host.run("/usr/local/sbin/ov-server-doctor --quick")
    assert result.rc in (0, 1), result.stderr
    for section in ("System", "GPU hardware", "Compute runtime", "OpenVINO devices", "Verdict"):
        assert f"\n{section}" in result.stdout
    assert re.search(
        r"^  running as +ov-server \(groups ov-server, render, video\)", result.stdout, re.M
    )
