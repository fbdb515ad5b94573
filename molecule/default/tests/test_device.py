"""The service's sandbox and a GPU render node: made by hand (no GPU here), then opened by the
doctor as the service. No driver answers for it, so ENXIO/ENODEV is what passing the sandbox
looks like; EACCES (no render group), ENOENT (a hidden /dev) or EPERM would be a failure.

Seen on this kind of machine: a container's device cgroup is not enforced by the systemd
inside it, so DeviceAllow= itself is exercised only on the Mac mini."""

from __future__ import annotations

import pytest
from conftest import doctor

pytestmark = pytest.mark.service

NODE = "/dev/dri/renderD128"


@pytest.fixture()
def render_node(host):
    if host.backend.name != "ov-llm-bookworm":
        pytest.skip("only ov-llm-bookworm may make device nodes (CAP_MKNOD, molecule.yml)")
    host.check_output(f"mkdir -p /dev/dri && mknod {NODE} c 226 128 && chgrp render {NODE}")
    host.check_output(f"chmod 0660 {NODE}")
    yield NODE
    host.check_output(f"rm -f {NODE}")


def test_service_sandbox_opens_a_render_node(host, render_node):
    _, report = doctor(host, "--quick")
    (node,) = [n for n in report["gpu_hardware"] if n["path"] == render_node]
    assert (node["in_dev"], node["group"], node["mode"]) == (True, "render", "0660")
    assert node["access"].split(":")[0] in ("ENXIO", "ENODEV"), node
