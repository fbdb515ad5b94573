"""The doctor for real: facts of this host, OpenVINO in a child process, the probe on the tiny
model, the command line and the server's start-up verdict. Nothing here depends on whether
this machine has an Intel GPU: the GPU cases ask for a device no machine has (GPU.7)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ov_llm_server.doctor.diagnose import diagnose
from ov_llm_server.doctor.facts import (
    Paths,
    gather,
    gpu_libraries,
    icd_files,
    linker_cache,
    pci_gpus,
    render_nodes,
)
from ov_llm_server.doctor.isolation import run_python
from ov_llm_server.doctor.probe import choose_target, run_probe
from ov_llm_server.doctor.startup import startup_verdict
from ov_llm_server.registry import ModelEntry
from ov_llm_server.settings import Settings

ANSWER = "The capital of France is Paris."  # the tiny model's answer to the probe's prompt


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OV_")}
    return subprocess.run(
        [sys.executable, "-m", "ov_llm_server", "doctor", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
        check=False,
    )


def test_facts_of_this_host() -> None:
    facts = gather()
    assert facts.identity.user == pwd.getpwuid(os.geteuid()).pw_name
    assert facts.python == platform.python_version()
    assert facts.kernel == platform.release()
    assert facts.python_packages["openvino"] == "2026.4.1"
    if shutil.which("dpkg-query"):
        assert isinstance(facts.debian_packages, dict)
    else:
        assert facts.debian_packages is None
    for node in facts.render_nodes:
        assert node.name.startswith("renderD")
        assert node.in_dev or node.in_sysfs
        assert (node.access == "missing") is (not node.in_dev)


def test_render_nodes_and_icds_of_a_made_up_host(tmp_path: Path) -> None:
    sys_drm = tmp_path / "sys" / "class" / "drm"
    drivers = tmp_path / "sys" / "bus" / "pci" / "drivers" / "i915"
    drivers.mkdir(parents=True)
    for name, device_id in (("renderD128", "0x3e9b"), ("renderD129", "0x1234")):
        device = sys_drm / name / "device"
        device.mkdir(parents=True)
        (device / "vendor").write_text("0x8086\n")
        (device / "device").write_text(f"{device_id}\n")
        (device / "driver").symlink_to(drivers)
    dev_dri = tmp_path / "dev" / "dri"
    dev_dri.mkdir(parents=True)
    (dev_dri / "renderD129").write_bytes(b"")  # renderD128 is hidden: not in this /dev
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "intel.icd").write_text("/nowhere/intel-opencl/libigdrcl.so\n")
    (vendors / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    paths = Paths(dev_dri=dev_dri, sys_drm=sys_drm, icd_dirs=(vendors,))

    hidden, shown = render_nodes(paths)
    assert (hidden.name, hidden.in_sysfs, hidden.in_dev, hidden.access) == (
        "renderD128",
        True,
        False,
        "missing",
    )
    assert (hidden.vendor_id, hidden.device_id, hidden.driver) == ("0x8086", "0x3e9b", "i915")
    assert (shown.name, shown.in_dev, shown.access, shown.device_id) == (
        "renderD129",
        True,
        "ok",
        "0x1234",
    )
    assert shown.mode is not None and shown.group is not None

    intel, nvidia = icd_files(paths)
    assert (intel.intel, intel.library_exists) == (True, False)
    assert (nvidia.intel, nvidia.library_exists, nvidia.library) == (
        False,
        None,
        "libnvidia-opencl.so.1",
    )


def test_pci_gpus_libraries_and_cmdline_of_a_made_up_host(tmp_path: Path) -> None:
    pci = tmp_path / "sys" / "bus" / "pci" / "devices"
    driver = tmp_path / "sys" / "bus" / "pci" / "drivers" / "i915"
    driver.mkdir(parents=True)
    for address, vendor, device, cls in (
        ("0000:00:02.0", "0x8086", "0x3e9b", "0x030000"),  # the UHD 630
        ("0000:00:1f.3", "0x8086", "0xa348", "0x040300"),  # audio: not a GPU
        ("0000:01:00.0", "0x1002", "0x67df", "0x030000"),  # a GPU without a driver
    ):
        (pci / address).mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", cls)):
            (pci / address / name).write_text(value + "\n")
    (pci / "0000:00:02.0" / "driver").symlink_to(driver)
    local, multiarch = tmp_path / "usr-local-lib", tmp_path / "usr-lib"
    local.mkdir()
    multiarch.mkdir()
    (local / "libigc.so.1.0.17537.24").write_bytes(b"")
    (local / "libigc.so.1").symlink_to("libigc.so.1.0.17537.24")
    (local / "libze_intel_gpu_legacy1.so.1.5.30872.36").write_bytes(b"")
    (multiarch / "libigdgmm.so.12").write_bytes(b"")
    (multiarch / "libunrelated.so.3").write_bytes(b"")
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz ro quiet nomodeset\n")
    modules = tmp_path / "sys" / "module"
    modules.mkdir(parents=True)
    paths = Paths(
        sys_pci=pci,
        lib_dirs=(multiarch, local),
        proc_cmdline=tmp_path / "cmdline",
        sys_module=modules,
        dev_dri=tmp_path / "no-dri",
        sys_drm=tmp_path / "no-drm",
        icd_dirs=(),
    )

    uhd, other = pci_gpus(paths)
    assert (uhd.address, uhd.vendor_id, uhd.device_id, uhd.driver) == (
        "0000:00:02.0",
        "0x8086",
        "0x3e9b",
        "i915",
    )
    assert (other.vendor_id, other.driver) == ("0x1002", None)

    # The real linker cache of this host knows none of these files.
    libraries = gpu_libraries(paths, linker_cache())
    assert [(Path(lib.path).name, lib.soname, lib.cached) for lib in libraries] == [
        ("libigc.so.1.0.17537.24", "libigc.so.1", False),
        ("libigdgmm.so.12", "libigdgmm.so.12", False),
        ("libze_intel_gpu_legacy1.so.1.5.30872.36", "libze_intel_gpu_legacy1.so.1", False),
    ]
    known = gpu_libraries(paths, {"libigc.so.1"})
    assert [lib.cached for lib in known] == [True, False, False]

    facts = gather(paths)
    assert facts.kernel_cmdline == "BOOT_IMAGE=/vmlinuz ro quiet nomodeset"
    assert facts.i915_loaded is False
    assert [lib.soname for lib in facts.gpu_libraries] == [lib.soname for lib in libraries]


def test_diagnose_a_made_up_mac_mini_with_every_fault(tmp_path: Path) -> None:
    """Real gatherers over a made-up tree, OpenVINO's real listing, the real judgement: an
    unbound UHD 630 under nomodeset, Intel's 24.52 runtime (Gen12+ only) from a tarball, its
    compiler missing from the linker cache."""
    gpu = tmp_path / "pci" / "0000:00:02.0"
    gpu.mkdir(parents=True)
    for name, value in (("vendor", "0x8086"), ("device", "0x3e9b"), ("class", "0x030000")):
        (gpu / name).write_text(value + "\n")
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libze_intel_gpu.so.1.6.32224.5").write_bytes(b"")
    (libs / "libigc.so.2.5.6").write_bytes(b"")
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "intel.icd").write_text("/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl.so\n")
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz ro quiet splash nomodeset\n")
    paths = Paths(
        dev_dri=tmp_path / "dri",
        sys_drm=tmp_path / "drm",
        icd_dirs=(vendors,),
        proc_cmdline=tmp_path / "cmdline",
        sys_pci=tmp_path / "pci",
        sys_module=tmp_path / "module",
        lib_dirs=(libs,),
    )
    settings = Settings.model_validate(
        {"device": "GPU", "fallback_device": "CPU", "registry_path": tmp_path / "r.json"}
    )
    report = diagnose(settings, quick=True, timeout=120, paths=paths).to_dict()
    findings = {f["id"]: f for f in report["findings"]}
    assert {"i915-disabled", "no-render-node", "stale-linker-cache"} <= set(findings), findings
    assert report["verdict"]["reason"].startswith(
        "OV_DEVICE=GPU cannot serve: the kernel command line disables the GPU driver: nomodeset"
    )
    assert report["verdict"]["serves_on"] == "CPU"
    assert findings["stale-linker-cache"]["remedy_command"] == ["ldconfig"]
    assert findings["stale-linker-cache"]["evidence"]["not_in_ldconfig_cache"] == [
        str(libs / "libigc.so.2.5.6"),
        str(libs / "libze_intel_gpu.so.1.6.32224.5"),
    ]
    assert report["pci_gpus"][0]["generation"] == "Gen9.5"
    if report["runtime"]["opencl_drivers"][0]["package"] != "libze_intel_gpu.so":
        pytest.skip("this host has an Intel runtime package, which the doctor believes first")
    assert findings["runtime-gen12-only"]["remedy_route"] == "legacy1"
    assert findings["runtime-gen12-only"]["evidence"]["device_ids"] == ["0x3e9b"]


def test_linker_cache_of_this_host() -> None:
    cache = linker_cache()
    if shutil.which("ldconfig") or Path("/sbin/ldconfig").exists():
        assert cache is not None and "libc.so.6" in cache


# ---------------------------------------------------------------- child processes


def test_a_crashing_child_is_reported_not_shared() -> None:
    outcome = run_python(
        ["-c", "import os, signal, sys; sys.stderr.write('driver says bye\\n'); "
         "os.kill(os.getpid(), signal.SIGSEGV)"],
        timeout=60,
    )  # fmt: skip
    assert outcome.data is None
    assert outcome.crashed_by == "SIGSEGV"
    assert outcome.error == "crashed with SIGSEGV (driver says bye)"


def test_a_hanging_child_is_killed_with_its_own_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time, pathlib\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    outcome = run_python(["-c", script], timeout=3)
    assert outcome.timed_out
    assert outcome.error == "no answer within 3 s"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"grandchild {grandchild} outlived the timeout")


# ---------------------------------------------------------------- the functional probe


def test_probe_for_real_on_cpu(tiny_ir_int8: Path) -> None:
    settings = Settings.model_validate({"device": "CPU"})
    target = choose_target(settings, {}, str(tiny_ir_int8), "CPU")
    assert not isinstance(target, str)
    result = run_probe(target, settings, timeout=300)
    assert result.error is None
    assert (result.reference_text, result.device_text) == (ANSWER, ANSWER)
    assert result.status == "identical"
    assert result.agreeing_words == len(ANSWER.split())


def test_probe_against_a_device_that_is_not_there(tiny_ir_int8: Path) -> None:
    settings = Settings.model_validate({"device": "GPU.7"})
    target = choose_target(settings, {}, str(tiny_ir_int8))
    assert not isinstance(target, str) and target.device == "GPU.7"
    result = run_probe(target, settings, timeout=300)
    assert result.status == "failed"
    assert result.reference_text == ANSWER  # the CPU side ran; the device did not
    assert result.device_text is None
    assert result.error


def test_probe_picks_the_smallest_model_the_service_runs_on_a_gpu(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    entries = {
        f"tiny-{fmt}": ModelEntry(path=str(tiny_models[fmt]), weight_format=fmt)
        for fmt in ("fp16", "int8", "int4")
    }
    entries["gone-int8"] = ModelEntry(path=str(tmp_path / "gone"), weight_format="int8")
    # Smaller, but no LLMPipeline can load them: never the probe's model.
    for task in ("feature-extraction", "automatic-speech-recognition", "text-to-audio"):
        entries[task] = ModelEntry(
            path=str(tiny_models["int8"] / "openvino_tokenizer.xml"),
            task=task,
            weight_format="int8",
        )
    gpu = Settings.model_validate({"device": "GPU", "registry_path": tmp_path / "r.json"})
    target = choose_target(gpu, entries)
    # int4 would run on the CPU (OV_INT4_DEVICE), so int8 is the smallest one on the GPU.
    assert not isinstance(target, str)
    assert (target.model, target.device) == ("tiny-int8", "GPU")
    everything_on_gpu = gpu.model_copy(update={"int4_device": None})
    target = choose_target(everything_on_gpu, entries)
    assert not isinstance(target, str) and target.model == "tiny-int4"
    cpu = gpu.model_copy(update={"device": "CPU"})
    assert choose_target(cpu, entries) == "nothing to compare: OV_DEVICE=CPU is not a GPU"
    assert "no model to probe" in str(choose_target(gpu, {}))


# ---------------------------------------------------------------- the command line


def test_doctor_json_on_cpu_with_the_probe(tiny_ir_int8: Path, tmp_path: Path) -> None:
    result = doctor(
        "--json",
        "--probe-model",
        str(tiny_ir_int8),
        "--probe-device",
        "CPU",
        OV_DEVICE="CPU",
        OV_REGISTRY_PATH=str(tmp_path / "registry.json"),
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["schema"] == 1
    assert report["verdict"]["usable"] is True
    assert report["verdict"]["serves_on"] == "CPU"
    assert report["verdict"]["remedy"] is None
    assert "CPU" in [d["name"] for d in report["openvino"]["devices"]]
    assert report["system"]["identity"]["user"] == pwd.getpwuid(os.geteuid()).pw_name
    assert report["probe"]["status"] == "identical"
    assert report["probe"]["device_text"] == ANSWER
    assert [f for f in report["findings"] if f["severity"] == "error"] == []
    assert report["kernel_cmdline"] == Path("/proc/cmdline").read_text().strip()
    assert isinstance(report["pci_gpus"], list)
    assert isinstance(report["runtime"]["libraries"], list)


def test_doctor_json_findings_carry_id_remedy_and_evidence(tmp_path: Path) -> None:
    """The shape the playbook reads, with the NEO keys in the environment as the service's
    unit would set them (on a host without a GPU they change nothing)."""
    result = doctor(
        "--json",
        "--quick",
        OV_DEVICE="GPU.7",
        OV_REGISTRY_PATH=str(tmp_path / "registry.json"),
        NEOReadDebugKeys="1",
        OverrideGpuAddressSpace="48",
    )
    report = json.loads(result.stdout)
    assert report["runtime"]["environment"] == {
        "NEOReadDebugKeys": "1",
        "OverrideGpuAddressSpace": "48",
    }
    assert report["findings"]
    for finding in report["findings"]:
        assert finding["id"] == finding["code"]
        assert finding["severity"] in {"error", "warning", "info"}
        assert isinstance(finding["message"], str)
        assert finding["remedy"] is None or isinstance(finding["remedy"], str)
        assert isinstance(finding["evidence"], dict)
        assert finding["remedy_environment"] is None or isinstance(
            finding["remedy_environment"], dict
        )
        assert finding["remedy_route"] in {None, "legacy1", "distribution"}
        assert finding["remedy_command"] is None or isinstance(finding["remedy_command"], list)
    assert "device-not-found" in [f["id"] for f in report["findings"]]


def test_doctor_exits_1_with_the_remedy_when_the_device_cannot_serve(tmp_path: Path) -> None:
    env = {"OV_DEVICE": "GPU.7", "OV_REGISTRY_PATH": str(tmp_path / "registry.json")}
    result = doctor("--json", "--quick", **env)
    assert result.returncode == 1, result.stderr
    verdict = json.loads(result.stdout)["verdict"]
    assert verdict["usable"] is False
    assert verdict["reason"].startswith("OV_DEVICE=GPU.7 cannot serve: ")
    assert verdict["remedy"]
    text = doctor("--quick", **env, OV_FALLBACK_DEVICE="CPU")
    assert text.returncode == 1
    assert "PROBLEM: OV_DEVICE=GPU.7 cannot serve" in text.stdout
    assert "The service falls back to OV_FALLBACK_DEVICE=CPU" in text.stdout
    assert "\n  fix: " in text.stdout


def test_doctor_refuses_invalid_settings() -> None:
    result = doctor("--quick", OV_DEVICE="")
    assert result.returncode == 2
    assert result.stderr.startswith("ov-llm-server: invalid OV_DEVICE")


# ---------------------------------------------------------------- the server's verdict


def _doctor_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            # The session's servers (and their engines) are children too: only doctors count.
            command = " ".join(child.cmdline())
            if "doctor" in command and child.status() != "zombie":
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_startup_verdict(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    cpu = Settings.model_validate({"device": "CPU", "registry_path": registry})
    verdict = asyncio.run(startup_verdict(cpu, timeout=120))
    assert verdict["usable"] is True
    assert verdict["serves_on"] == "CPU"
    assert isinstance(verdict["gpu_usable"], bool)
    assert "CPU" in verdict["devices"]
    assert verdict["reason"].startswith("OV_DEVICE=CPU is available")

    gpu7 = cpu.model_copy(update={"device": "GPU.7", "fallback_device": "CPU"})
    verdict = asyncio.run(startup_verdict(gpu7, timeout=120))
    assert verdict["usable"] is False
    assert verdict["serves_on"] == "CPU"
    assert verdict["remedy"]
    assert verdict["problems"]


def test_startup_verdict_that_times_out_leaves_no_process(tmp_path: Path) -> None:
    settings = Settings.model_validate({"device": "CPU", "registry_path": tmp_path / "r.json"})
    verdict = asyncio.run(startup_verdict(settings, timeout=0.2))
    assert verdict["usable"] is None
    assert verdict["reason"] == "the doctor could not tell: no answer within 0.2 s"
    deadline = time.monotonic() + 10
    while _doctor_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _doctor_processes() == []
