"""Shared helpers of the Molecule tests: what each platform should have, HTTP through the
container, the doctor as the service, the journal on failure."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest

SERVICE = "ov-server"
BASE_URL = "http://127.0.0.1:8000"
DOCTOR = "/usr/local/sbin/ov-server-doctor"
VENDORS = "/etc/OpenCL/vendors"
LOADERS = ("libze1", "ocl-icd-libopencl1", "clinfo")
LEGACY1 = {
    "libigdgmm12": "22.5.0",
    "intel-igc-core": "1.0.17537.24",
    "intel-igc-opencl": "1.0.17537.24",
    "intel-opencl-icd-legacy1": "24.35.30872.36",
    "intel-level-zero-gpu-legacy1": "1.5.30872.36",
}


# The hosts of the service (site.yml's llm_nodes); ov-llm-legacy1 has the GPU runtime only.
# Molecule hands testinfra every host of the scenario, so a module of service tests says
# `pytestmark = pytest.mark.service` and runs on these alone.
SERVICE_HOSTS = ("ov-llm-trixie", "ov-llm-bookworm")


@dataclass(frozen=True)
class Platform:
    """What the roles leave on one platform of the scenario (host_vars/<name>.yml)."""

    codename: str
    device: str
    fallback_device: str | None
    int4_device: str
    installed: tuple[str, ...]  # GPU packages
    absent: tuple[str, ...]
    icd_files: dict[str, str] = field(default_factory=dict)  # path -> the library it names
    opencl_drivers: tuple[tuple[str, str], ...] = ()  # (package, version prefix) the doctor sees

    @property
    def expected_status(self) -> str:
        """/health's status once the doctor has spoken: a configured GPU that is not there
        (no container has one) leaves the node degraded, serving on the fallback device."""
        return "ok" if self.device == "CPU" else "degraded"


PLATFORMS = {
    "ov-llm-trixie": Platform(
        codename="trixie",
        device="CPU",
        fallback_device=None,
        int4_device="CPU",
        installed=LOADERS,
        absent=("intel-opencl-icd", *LEGACY1),
    ),
    "ov-llm-bookworm": Platform(
        codename="bookworm",
        device="GPU",
        fallback_device="CPU",
        int4_device="GPU",
        installed=("intel-opencl-icd", "libigc1", "libigdfcl1", "libigdgmm12", *LOADERS),
        absent=tuple(name for name in LEGACY1 if name != "libigdgmm12"),
        icd_files={f"{VENDORS}/intel.icd": "/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl.so"},
        opencl_drivers=(("intel-opencl-icd", "22.43."),),
    ),
    "ov-llm-legacy1": Platform(
        codename="bookworm",
        device="",  # no ov_server here
        fallback_device=None,
        int4_device="",
        installed=(*LEGACY1, *LOADERS),
        absent=("intel-opencl-icd", "libigc1", "libigdfcl1", "libze-intel-gpu1"),
        icd_files={
            f"{VENDORS}/intel_legacy1.icd": "/usr/lib/x86_64-linux-gnu/intel-opencl/"
            "libigdrcl_legacy1.so"
        },
    ),
}


def host_name(host: Any) -> str:
    return str(host.backend.name)


@pytest.fixture(autouse=True)
def _service_tests_on_service_hosts(request: pytest.FixtureRequest, host: Any) -> None:
    if request.node.get_closest_marker("service") and host_name(host) not in SERVICE_HOSTS:
        pytest.skip(f"{host_name(host)} has the GPU runtime only, no service")


@pytest.fixture()
def platform(host: Any) -> Platform:
    return PLATFORMS[host_name(host)]


def doctor(host: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """``ov-server-doctor --json ARGS``: the doctor as the service, in its sandbox."""
    result = host.run(" ".join(shlex.quote(a) for a in (DOCTOR, "--json", *args)))
    assert result.rc in (0, 1), result.stderr
    return result.rc, json.loads(result.stdout)


# Runs inside the container with its system python3, so that the tests reach
# the service on the container's loopback, where it listens.
_HTTP_CLIENT = """
import json, sys, urllib.error, urllib.request
method, url, body, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = body.encode() if body else None
request = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def http(
    host: Any, method: str, path: str, payload: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    """Send one request to the service from inside the container: (status, parsed JSON body)."""
    body = json.dumps(payload) if payload is not None else ""
    command = " ".join(
        shlex.quote(part)
        for part in ("python3", "-c", _HTTP_CLIENT, method, BASE_URL + path, body, str(timeout))
    )
    result = json.loads(host.check_output(command))
    try:
        parsed = json.loads(result["body"])
    except ValueError:
        parsed = result["body"]
    return result["status"], parsed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and host is not None:
        journal = host.run(f"journalctl -u {SERVICE} --no-pager -n 80 -o short-iso")
        report.sections.append((f"journal of {SERVICE}", journal.stdout + journal.stderr))
