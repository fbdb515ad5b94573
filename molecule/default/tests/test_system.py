"""What the site playbook leaves on the host: packages, user, files, the unit and its sandbox."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import host_name, http

SERVICE = "ov-server"
USER = "ov-server"
GROUP = "ov-server"
VENV = "/opt/ov-llm-server/venv"
MODELS = "/var/lib/ov-server/models"
REGISTRY = f"{MODELS}/converted_models/registry.json"
ENV_FILE = "/etc/homelab-llm/ov-server.env"
UNIT_FILE = "/etc/systemd/system/ov-server.service"
GPU_ENV_FILE = "/etc/homelab-llm/gpu-runtime.env"
STAMP = f"{VENV}/install.stamp"
ROUTE_FACT = "/etc/ansible/facts.d/intel_gpu_runtime.fact"
DOCTOR = "/usr/local/sbin/ov-server-doctor"
MODEL_NAME = "smollm2-135m-instruct"

pytestmark = pytest.mark.service

PINNED = {
    "openvino": "2026.4.1",
    "openvino-genai": "2026.4.1.0",
    "openvino-tokenizers": "2026.4.1.0",
}


def test_python_packages(host):
    for name in ("python3", "python3-venv"):
        assert host.package(name).is_installed, name


def test_service_user(host):
    user = host.user(USER)
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/var/lib/ov-server"
    assert user.group == GROUP
    assert user.uid < 1000
    assert {"render", "video"} <= set(user.groups)


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/var/lib/ov-server", USER, GROUP, 0o750),
        (MODELS, USER, GROUP, 0o2750),
        (f"{MODELS}/converted_models", USER, GROUP, 0o2750),
        (f"{MODELS}/og_models", USER, GROUP, 0o2750),
        ("/etc/homelab-llm", "root", GROUP, 0o750),
        ("/opt/ov-llm-server", "root", "root", 0o755),
        ("/var/cache/ov-server", USER, GROUP, 0o750),
    ],
)
def test_directory(host, path, owner, group, mode):
    directory = host.file(path)
    assert directory.is_directory
    assert directory.user == owner
    assert directory.group == group
    assert directory.mode == mode


def test_registry_kept(host):
    # prepare.yml registered the test model; the role creates a registry only when there is none.
    registry = json.loads(host.file(REGISTRY).content_string)
    assert registry["version"] == 1
    assert registry["models"][MODEL_NAME] == {
        "path": f"{MODELS}/converted_models/{MODEL_NAME}/SmolLM2-135M-Instruct.Q4_1.gguf",
        "task": "text-generation-with-past",
        "weight_format": "q4_1",
    }


def test_env_file(host, platform):
    env = host.file(ENV_FILE)
    assert env.is_file
    assert env.user == "root"
    assert env.group == GROUP
    assert env.mode == 0o640
    content = env.content_string
    assert content.startswith("#")
    settings = dict(
        line.split("=", 1) for line in content.splitlines() if line and not line.startswith("#")
    )
    expected = {
        "OV_HOST": "127.0.0.1",
        "OV_PORT": "8000",
        "OV_DEVICE": platform.device,
        "OV_INT4_DEVICE": platform.int4_device,
        "OV_REGISTRY_PATH": REGISTRY,
        "OV_MODELS_DIR": MODELS,
        "OV_LOG_LEVEL": "INFO",
        "OV_CACHE_DIR": "/var/cache/ov-server",
        "OV_MAX_LOADED_MODELS": "2",
        "OV_MAX_QUEUE": "32",
    }
    if platform.fallback_device:
        expected["OV_FALLBACK_DEVICE"] = platform.fallback_device
    assert settings == expected
    # Settings left to the service's default are documented, commented out.
    defaults = ["OV_MODEL_PATH", "OV_API_KEY", "OV_PRELOAD_MODELS", "OV_KV_CACHE_PRECISION"]
    for name in defaults + ([] if platform.fallback_device else ["OV_FALLBACK_DEVICE"]):
        assert re.search(rf"^# {name}=", content, re.MULTILINE), name


def test_env_file_documents_every_setting(host):
    # The service's own list of settings, from the installed package: the
    # template must not fall behind it.
    fields = host.check_output(
        f"{VENV}/bin/python -c "
        "'from ov_llm_server.settings import Settings; print(*Settings.model_fields)'"
    ).split()
    content = host.file(ENV_FILE).content_string
    missing = [
        name
        for name in (f"OV_{field.upper()}" for field in fields)
        if not re.search(rf"^(# )?{name}=", content, re.MULTILINE)
    ]
    assert not missing


def test_unit_file(host):
    unit = host.file(UNIT_FILE)
    assert unit.user == "root"
    assert unit.group == "root"
    assert unit.mode == 0o644
    assert unit.content_string.startswith("#")
    assert f"ExecStart={VENV}/bin/ov-llm-server" in unit.content_string


# Lines of the unit that are about the unit, not about how its process runs.
UNIT_ONLY = {
    "Description",
    "Wants",
    "After",
    "Type",
    "ExecStart",
    "Restart",
    "RestartSec",
    "TimeoutStopSec",
    "WantedBy",
    # The service's own: a doctor's transient unit would remove the service's
    # runtime directory when it stops, and the doctor needs no API key.
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "LoadCredential",
}


def _unit_properties(text):
    lines = [line for line in text.splitlines() if line and not line.startswith(("#", "["))]
    return [line for line in lines if line.split("=", 1)[0] not in UNIT_ONLY]


def test_doctor_wrapper_gives_the_doctor_the_units_sandbox(host):
    wrapper = host.file(DOCTOR)
    assert (wrapper.user, wrapper.group, wrapper.mode) == ("root", "root", 0o755)
    text = wrapper.content_string
    assert "exec systemd-run --quiet --wait --pipe --collect" in text
    assert f"venv={VENV}\n" in text
    assert '-- "$venv/bin/ov-llm-server" doctor "$@"' in text
    # Every identity, environment and sandbox line of the unit, and nothing else.
    passed = [line.strip() for line in text.splitlines() if line.strip().startswith("--property=")]
    unit = _unit_properties(host.file(UNIT_FILE).content_string)
    assert len(unit) > 30
    assert [p.removeprefix("--property=").strip(" \\").strip("'") for p in passed] == unit


def test_service_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled
    assert service.is_running


EXPECTED_PROPERTIES = {
    "User": USER,
    "Group": GROUP,
    "SupplementaryGroups": "render video",
    "EnvironmentFiles": f"{ENV_FILE} (ignore_errors=no)",
    "Restart": "on-failure",
    "TimeoutStopUSec": "30s",
    "UMask": "0027",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ReadWritePaths": MODELS,
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "no",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    # OpenVINO's CPU plugin maps JIT code executable: W^X would break model loading.
    "MemoryDenyWriteExecute": "no",
    "CacheDirectory": "ov-server",
    "RuntimeDirectory": "ov-server",
    "RuntimeDirectoryMode": "0750",
}


def test_unit_properties(host):
    names = ",".join([*EXPECTED_PROPERTIES, "DeviceAllow"])
    shown = host.check_output(f"systemctl show {SERVICE} --property={names}")
    properties: dict[str, list[str]] = {}
    for line in shown.splitlines():
        key, _, value = line.partition("=")
        properties.setdefault(key, []).append(value)
    actual = {key: properties[key][0] for key in EXPECTED_PROPERTIES}
    assert actual == EXPECTED_PROPERTIES
    # The GPU runtime's remedy environment, optional, read by the service and its doctor.
    assert properties["EnvironmentFiles"][1] == f"{GPU_ENV_FILE} (ignore_errors=yes)"
    assert "char-drm rw" in properties["DeviceAllow"]


def test_security_exposure(host):
    report = host.check_output(f"systemd-analyze security {SERVICE}.service --no-pager")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", report).group(1))
    assert exposure <= 3.0, report


def test_venv_has_pinned_versions(host):
    frozen = host.check_output(f"{VENV}/bin/python -m pip freeze --disable-pip-version-check")
    installed = dict(line.split("==", 1) for line in frozen.splitlines() if "==" in line)
    for name, version in PINNED.items():
        assert installed.get(name) == version, name
    # Installed from the copied checkout: "ov-llm-server @ file:///opt/ov-llm-server/src".
    assert re.search(r"^ov-llm-server @ file:///opt/ov-llm-server/src$", frozen, re.MULTILINE)
    # The conversion extra is off in this scenario: no torch.
    assert "torch" not in installed


def test_convert_cli_on_path(host):
    link = host.file("/usr/local/bin/ov-convert-model")
    assert link.is_symlink
    # Through the venv link (linked_to would resolve it to the release's own venv).
    target = host.check_output("readlink /usr/local/bin/ov-convert-model")
    assert target == f"{VENV}/bin/ov-convert-model"
    assert host.run("ov-convert-model --help").rc == 0


def _main_pid(host):
    return int(host.check_output(f"systemctl show {SERVICE} --property=MainPID --value"))


def test_runs_without_root(host):
    pid = _main_pid(host)
    assert pid > 0
    # /proc/<pid> belongs to the process's effective user.
    assert host.check_output(f"stat -c %U /proc/{pid}") == USER


# Where the running service may write: its models, its cache, its private /tmp, and the
# API file systems that ProtectSystem=strict leaves writable (/run is root's, mode 0755).
# Everything else in its mount namespace must be read-only.
WRITABLE = (MODELS, "/var/cache/ov-server", "/tmp", "/var/tmp", "/dev", "/proc", "/sys", "/run")


def test_service_cannot_write_outside_its_own_directories(host):
    mountinfo = host.check_output(f"cat /proc/{_main_pid(host)}/mountinfo")
    mounts = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        mounts[fields[4]] = set(fields[5].split(","))
    assert "ro" in mounts["/"]
    assert "rw" in mounts[MODELS]
    writable = sorted(point for point, options in mounts.items() if "rw" in options)
    outside = [
        point
        for point in writable
        if not any(point == root or point.startswith(root + "/") for root in WRITABLE)
    ]
    assert outside == [], writable


def test_stop_ends_cleanly_then_starts_again(host):
    host.check_output(f"systemctl stop {SERVICE}")
    # "success", not "timeout": SIGTERM ended it within TimeoutStopSec, no SIGKILL needed.
    assert host.check_output(f"systemctl show {SERVICE} --property=Result --value") == "success"
    host.check_output(f"systemctl start {SERVICE}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, _ = http(host, "GET", "/health", timeout=5)
        except AssertionError:
            status = 0
        if status == 200:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{SERVICE} did not answer /health after a restart")


def test_runtime_directory_is_the_services(host):
    # systemd makes /run/ov-server for the running service, owned by it ($RUNTIME_DIRECTORY).
    directory = host.file("/run/ov-server")
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == (USER, GROUP, 0o750)


def test_gpu_runtime_environment_is_empty_without_a_finding(host):
    # intel_gpu_runtime_source auto, and no doctor finding with a remedy in a container.
    env = host.file(GPU_ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", GROUP, 0o640)
    assert [line for line in env.content_string.splitlines() if not line.startswith("#")] == []


def test_route_recorded_with_its_reason(host):
    fact = json.loads(host.file(ROUTE_FACT).content_string)
    assert fact["route"] == "distribution"
    assert fact["environment"] == {}
    assert fact["reason"].startswith("no remedy applied; the doctor said: ")
    # Ansible reads it back as a local fact.
    assert host.file(ROUTE_FACT).mode == 0o644


def test_install_stamp_keeps_no_index_url(host):
    stamp = host.file(STAMP).content_string
    assert "indexes: pip configuration" in stamp
    assert "://" not in stamp


def test_no_api_key_anywhere(host):
    # No key in this scenario: no credential file, no LoadCredential=.
    assert not host.file("/etc/homelab-llm/ov-api-key").exists
    assert "LoadCredential" not in host.file(UNIT_FILE).content_string


def test_service_runs_a_release_venv_from_the_hashed_lock(host):
    link = host.file(VENV)
    assert link.is_symlink
    release = link.linked_to
    assert re.fullmatch(r"/opt/ov-llm-server/venvs/[0-9a-f]{16}", release)
    # The unit and the doctor go through the link; the running process is the release's.
    assert f"ExecStart={VENV}/bin/ov-llm-server" in host.file(UNIT_FILE).content_string
    # The script's interpreter names the release: a switch of the link leaves it alone.
    cmdline = host.file(f"/proc/{_main_pid(host)}/cmdline").content_string.split("\0")
    assert cmdline[:2] == [f"{release}/bin/python", f"{VENV}/bin/ov-llm-server"]
    lock = host.file(f"{release}/requirements.lock").content_string
    assert "--hash=sha256:" in lock
    stamp = host.file(f"{release}/install.stamp").content_string
    assert "--require-hashes" in stamp
    # Every installed distribution is pinned in the lock, the service itself aside.
    locked = {_pin(line) for line in lock.splitlines() if "==" in line and not line[0].isspace()}
    frozen = host.check_output(f"{VENV}/bin/python -m pip freeze --disable-pip-version-check")
    for line in frozen.splitlines():
        if "==" in line:
            assert _pin(line) in locked, line


def _pin(line):
    """("name", "version") of a requirement line, the name normalised (PEP 503)."""
    name, version = line.split(";")[0].split()[0].split("==")
    return re.sub(r"[-_.]+", "-", name).lower(), version


def test_previous_release_kept_and_older_ones_pruned(host):
    venvs = sorted(host.file("/opt/ov-llm-server/venvs").listdir())
    release = host.file(VENV).linked_to
    previous = host.file("/opt/ov-llm-server/previous")
    if host_name(host) == "ov-llm-bookworm":
        # converge.yml ran it on an older release first, then switched.
        assert previous.linked_to == "/opt/ov-llm-server/venvs/0000000000000000"
        assert venvs == sorted(["0000000000000000", release.rsplit("/", 1)[1]])
    else:
        assert not previous.exists
        assert venvs == [release.rsplit("/", 1)[1]]
    assert not host.file("/opt/ov-llm-server/install.stamp").exists
