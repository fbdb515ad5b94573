"""The doctor's judgement over hosts it will meet: the UHD 630 with each runtime, the known-bad
combinations, the sandbox and permission failures, a GPU that computes garbage. Pure logic over
facts as the gatherers report them; the gatherers run for real in test_doctor.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ov_llm_server.doctor.facts import (
    GpuLibrary,
    IcdFile,
    Identity,
    PciGpu,
    RenderNode,
    SystemFacts,
)
from ov_llm_server.doctor.probe import ProbeResult
from ov_llm_server.doctor.report import Report, finding_dict
from ov_llm_server.doctor.verdict import OpenVinoDevices, device_available, judge
from ov_llm_server.settings import Settings

UBUNTU_2404 = {
    "intel-opencl-icd": "23.43.27642.40-1ubuntu3",
    "libze-intel-gpu1": "23.43.27642.40-1ubuntu3",
    "libigc1": "1.0.15468.29-1",
    "libigdgmm12": "22.3.17+ds1-1",
    "libze1": "1.16.15-1",
    "ocl-icd-libopencl1": "2.3.2-1build1",
}
LEGACY1 = {
    "intel-opencl-icd-legacy1": "24.35.30872.36",
    "intel-level-zero-gpu-legacy1": "1.5.30872.36",
    "intel-igc-core": "1.0.17537.24",
    "intel-igc-opencl": "1.0.17537.24",
    "libigdgmm12": "22.5.0",
    "ocl-icd-libopencl1": "2.3.2-1build1",
}
INTEL_REPO = {"intel-opencl-icd": "24.52.32224.5-1106~24.04", "ocl-icd-libopencl1": "2.3.2"}
PPA_25 = {"intel-opencl-icd": "25.18.33578.15-0ubuntu1~24.04~ppa1", "ocl-icd-libopencl1": "2.3.2"}
BOOKWORM = {
    "intel-opencl-icd": "22.43.24595.41-1",
    "libigc1": "1.0.12504.6-1+deb12u1",
    "libze1": "1.8.12-1",
    "ocl-icd-libopencl1": "2.3.1-1",
}

INTEL_ICD = IcdFile(
    "/etc/OpenCL/vendors/intel.icd",
    "/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl.so",
    True,
    True,
)
LEGACY1_ICD = IcdFile(
    "/etc/OpenCL/vendors/intel_legacy1.icd",
    "/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl_legacy1.so",
    True,
    True,
)


def node(device_id: str = "0x3e9b", access: str = "ok", **changes: Any) -> RenderNode:
    values: dict[str, Any] = {
        "name": "renderD128",
        "path": "/dev/dri/renderD128",
        "in_dev": True,
        "in_sysfs": True,
        "vendor_id": "0x8086",
        "device_id": device_id,
        "driver": "i915",
        "group": "render",
        "mode": "0660",
        "access": access,
    }
    values.update(changes)
    return RenderNode(**values)


SERVICE = Identity("ov-server", 998, ["ov-server", "render", "video"], True, True, True)
NEO_KEYS = {"NEOReadDebugKeys": "1", "OverrideGpuAddressSpace": "48"}
MAC_MINI_CMDLINE = "BOOT_IMAGE=/vmlinuz-6.8.0-49-generic root=UUID=0f3e ro quiet splash"


def pci(device_id: str = "0x3e9b", driver: str | None = "i915") -> PciGpu:
    return PciGpu("0000:00:02.0", "0x8086", device_id, "0x030000", driver)


def facts(
    packages: dict[str, str] | None,
    icds: list[IcdFile],
    nodes: list[RenderNode],
    **changes: Any,
) -> SystemFacts:
    values: dict[str, Any] = {
        "os": "Ubuntu 24.04.1 LTS",
        "kernel": "6.8.0-49-generic",
        "cpu": "Intel(R) Core(TM) i7-8700B CPU @ 3.20GHz",
        "memory_gib": 31.2,
        "python": "3.12.3",
        "python_packages": {"openvino": "2026.4.1"},
        "identity": SERVICE,
        "debian_packages": packages,
        "icd_files": icds,
        "render_nodes": nodes,
        "pci_gpus": [pci(n.device_id or "0x3e9b") for n in nodes],
        "kernel_cmdline": MAC_MINI_CMDLINE,
        "i915_loaded": bool(nodes),
    }
    values.update(changes)
    return SystemFacts(**values)


CPU = {"name": "CPU", "properties": {"FULL_DEVICE_NAME": "Intel(R) Core(TM) i7-8700B CPU"}}
UHD630 = {
    "name": "GPU",
    "properties": {
        "FULL_DEVICE_NAME": "Intel(R) UHD Graphics 630 (iGPU)",
        "DEVICE_ARCHITECTURE": "GPU: vendor=0x8086 arch=v9.1.9",
        "GPU_DEVICE_TOTAL_MEM_SIZE": 26_843_545_600,
        "GPU_DEVICE_MAX_ALLOC_MEM_SIZE": 4_294_959_104,
        "OPTIMIZATION_CAPABILITIES": ["FP32", "BIN", "FP16", "INT8", "EXPORT_IMPORT"],
    },
}
GPU_PLUGIN_OK = {"GPU": {"loaded": True, "devices": 1, "error": None}}
GPU_PLUGIN_EMPTY = {"GPU": {"loaded": True, "devices": 0, "error": None}}
NO_LOADER = {
    "GPU": {
        "loaded": False,
        "devices": 0,
        "error": 'Cannot load library "libopenvino_intel_gpu_plugin.so": libOpenCL.so.1: '
        "cannot open shared object file: No such file or directory",
    }
}
WITH_GPU = OpenVinoDevices([CPU, UHD630], GPU_PLUGIN_OK)
CPU_ONLY = OpenVinoDevices([CPU], GPU_PLUGIN_EMPTY)


def probe(status: str, weight_format: str = "int8", **changes: Any) -> ProbeResult:
    values: dict[str, Any] = {
        "model": f"benny-clean-{weight_format}",
        "path": "/var/lib/ov-server/models/converted_models/benny-clean",
        "weight_format": weight_format,
        "device": "GPU",
        "reason": "the smallest model the service runs on a GPU",
        "status": status,
        "prompt": "What is the capital of France?",
        "reference_text": "The capital of France is Paris.",
        "device_text": "The capital of France is Paris.",
    }
    values.update(changes)
    return ProbeResult(**values)


@dataclass
class Case:
    facts: SystemFacts
    ov: OpenVinoDevices
    usable: bool
    gpu_usable: bool
    cause: str | None = None  # the finding the verdict names
    codes: set[str] = field(default_factory=set)  # findings that must be there (besides cause)
    remedy_says: str | None = None
    reason_says: str | None = None
    device: str = "GPU"
    serves_on: str | None = "GPU"
    probe: ProbeResult | None = None
    absent: set[str] = field(default_factory=set)  # findings that must not be there
    # Fields of the cause's (else the first of ``codes``') finding as the JSON report has them.
    structured: dict[str, Any] = field(default_factory=dict)


CASES = {
    "uhd630, Ubuntu 24.04's runtime, probe identical": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node()]),
        WITH_GPU,
        usable=True,
        gpu_usable=True,
        probe=probe("identical"),
        reason_says="Intel(R) UHD Graphics 630 (iGPU)",
    ),
    "uhd630 (desktop id), legacy1": Case(
        facts(LEGACY1, [LEGACY1_ICD], [node("0x3e92")]), WITH_GPU, usable=True, gpu_usable=True
    ),
    "uhd630, int8 drifts late on the GPU: still fine": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node()]),
        WITH_GPU,
        usable=True,
        gpu_usable=True,
        codes={"probe-drifts"},
        probe=probe(
            "agrees", device_text="The capital of France is Paris, a city", agreeing_words=5
        ),
    ),
    "uhd630, Intel's repository 24.52: the GPU vanishes": Case(
        facts(INTEL_REPO, [INTEL_ICD], [node()]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="runtime-gen12-only",
        codes={"device-not-found"},
        absent={"neo-kernel-gtt"},
        remedy_says="legacy1 packages (intel_gpu_runtime_source: legacy1",
        reason_says="cannot drive this Coffee Lake, Gen9.5 GPU",
        serves_on="CPU",
        structured={
            "id": "runtime-gen12-only",
            "remedy_route": "legacy1",
            "evidence": {
                "gpu": "Coffee Lake, Gen9.5",
                "device_ids": ["0x3e9b"],
                "runtimes": ["intel-opencl-icd 24.52.32224.5-1106~24.04"],
            },
        },
    ),
    "uhd630, PPA 25.18": Case(
        facts(PPA_25, [INTEL_ICD], [node()]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="runtime-gen12-only",
        remedy_says="legacy1",
        serves_on="CPU",
        structured={"remedy_route": "legacy1"},
    ),
    "uhd630, a modern and a legacy ICD at once, GPU gone": Case(
        facts({**PPA_25, **LEGACY1}, [INTEL_ICD, LEGACY1_ICD], [node()]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="two-intel-runtimes",
        remedy_says="keep one (intel-opencl-icd-legacy1)",
        serves_on="CPU",
    ),
    "uhd630, two ICDs but the GPU still shows": Case(
        facts({**UBUNTU_2404, **LEGACY1}, [INTEL_ICD, LEGACY1_ICD], [node()]),
        WITH_GPU,
        usable=True,
        gpu_usable=True,
        codes={"two-intel-runtimes"},
    ),
    "Debian 12 container: runtime installed, no GPU device visible": Case(
        facts(BOOKWORM, [INTEL_ICD], []),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="no-render-node",
        reason_says="the compute runtime is installed: intel-opencl-icd 22.43.24595.41-1",
        remedy_says="--device /dev/dri",
        serves_on="CPU",
    ),
    "Debian 13 container: neither runtime nor device": Case(
        facts({"libze1": "1.20", "ocl-icd-libopencl1": "2.3.3", "clinfo": "3.0"}, [], []),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="no-render-node",
        codes={"no-intel-runtime"},
        reason_says="no Intel compute runtime is installed either",
        serves_on="CPU",
    ),
    "service user not in the render group": Case(
        facts(
            UBUNTU_2404,
            [INTEL_ICD],
            [node(access="EACCES: Permission denied")],
            identity=Identity("ov-server", 998, ["ov-server", "video"]),
        ),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="not-in-render-group",
        absent={"neo-kernel-gtt"},
        remedy_says="sudo usermod -aG render ov-server",
        serves_on="CPU",
        structured={
            "id": "not-in-render-group",
            "remedy_command": ["usermod", "-aG", "render", "ov-server"],
            "evidence": {
                "user": "ov-server",
                "groups": ["ov-server", "video"],
                "node": "/dev/dri/renderD128",
                "node_group": "render",
                "access": "EACCES: Permission denied",
            },
        },
    ),
    "in the render group, refused all the same (groups of an older login)": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node(access="EACCES: Permission denied")]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="render-node-denied",
        absent={"not-in-render-group"},
        remedy_says="restart the service",
        serves_on="CPU",
    ),
    "a device cgroup without DeviceAllow=char-drm": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node(access="EPERM: Operation not permitted")]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="render-node-denied",
        remedy_says="DeviceAllow=char-drm rw",
        serves_on="CPU",
    ),
    "a sandbox that hides /dev/dri": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node(in_dev=False, group=None, mode=None)]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="render-node-hidden",
        remedy_says="PrivateDevices=no",
        serves_on="CPU",
    ),
    "the GPU plugin crashes the process": Case(
        facts(PPA_25, [INTEL_ICD], [node()]),
        OpenVinoDevices(error="crashed with SIGSEGV", crashed_by="SIGSEGV"),
        usable=False,
        gpu_usable=False,
        cause="openvino-crashed",
        remedy_says="keep exactly one runtime",
        serves_on=None,
    ),
    "no OpenCL loader, no runtime": Case(
        facts({}, [], [node()]),
        OpenVinoDevices([CPU], NO_LOADER),
        usable=False,
        gpu_usable=False,
        cause="no-intel-runtime",
        codes={"no-opencl-loader"},
        serves_on="CPU",
    ),
    "int4 computes garbage on the iGPU": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node()]),
        WITH_GPU,
        usable=False,
        gpu_usable=False,
        cause="probe-mismatch",
        remedy_says="OV_INT4_DEVICE=CPU",
        probe=probe("differs", "int4", device_text="!!!!!!!!!!!!!!!!"),
        serves_on="CPU",
    ),
    "the driver crashes running the model": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node()]),
        WITH_GPU,
        usable=False,
        gpu_usable=False,
        cause="probe-failed",
        remedy_says="crashed",
        probe=probe("failed", device_text=None, error="crashed with SIGSEGV", crashed_by="SIGSEGV"),
        serves_on="CPU",
    ),
    "Tiger Lake with only legacy1": Case(
        facts(LEGACY1, [LEGACY1_ICD], [node("0x9a49")]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="runtime-drops-gpu",
        remedy_says="legacy1 serves Gen8-Gen11 only",
        serves_on="CPU",
        structured={"remedy_route": "distribution"},
    ),
    "an ICD file whose library is gone": Case(
        facts(
            UBUNTU_2404,
            [INTEL_ICD, IcdFile("/etc/OpenCL/vendors/x.icd", "/nope/libigdrcl.so", False, True)],
            [node()],
        ),
        WITH_GPU,
        usable=True,
        gpu_usable=True,
        codes={"icd-library-missing", "two-intel-runtimes"},
    ),
    "GPU.1 asked for, one GPU there": Case(
        facts(UBUNTU_2404, [INTEL_ICD], [node()]),
        WITH_GPU,
        usable=False,
        gpu_usable=True,
        cause="device-not-found",
        device="GPU.1",
        serves_on="CPU",
    ),
    "AUTO:GPU,CPU without a GPU still serves": Case(
        facts(BOOKWORM, [INTEL_ICD], []),
        CPU_ONLY,
        usable=True,
        gpu_usable=False,
        codes={"no-render-node"},
        device="AUTO:GPU,CPU",
        serves_on="AUTO:GPU,CPU",
    ),
    "a CPU service on a host without GPU": Case(
        facts({}, [], []),
        CPU_ONLY,
        usable=True,
        gpu_usable=False,
        device="CPU",
        serves_on="CPU",
    ),
}


# The failures met on this hardware (issue 22): each signature as the gatherers report it.
UBUNTU_ON_69 = facts(UBUNTU_2404, [INTEL_ICD], [node()], kernel="6.9.3-060903-generic")
STALE_IGC = [
    GpuLibrary("/usr/local/lib/libigc.so.1.0.17537.24", "libigc.so.1", False),
    GpuLibrary("/usr/local/lib/libigdfcl.so.1.0.17537.24", "libigdfcl.so.1", False),
    GpuLibrary("/usr/lib/x86_64-linux-gnu/libigdgmm.so.12.5.0", "libigdgmm.so.12", True),
]
CASES.update(
    {
        "uhd630, kernel 6.8, Ubuntu's 23.43: no GPU enumerated": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()]),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="neo-kernel-gtt",
            codes={"device-not-found"},
            remedy_says="NEOReadDebugKeys=1 OverrideGpuAddressSpace=48",
            reason_says="kernel 6.8.0-49-generic with compute runtime intel-opencl-icd 23.43",
            serves_on="CPU",
            structured={
                "id": "neo-kernel-gtt",
                "severity": "error",
                "remedy_environment": NEO_KEYS,
                "remedy_route": None,
                "evidence": {
                    "kernel": "6.8.0-49-generic",
                    "runtimes": ["intel-opencl-icd 23.43.27642.40-1ubuntu3"],
                    "environment": {},
                    "render_nodes": ["/dev/dri/renderD128"],
                    "icd_files": ["/etc/OpenCL/vendors/intel.icd"],
                    "opencl_gpus": 0,
                },
            },
        ),
        "mainline 6.9 kernel, 23.43: the same signature": Case(
            UBUNTU_ON_69,
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="neo-kernel-gtt",
            serves_on="CPU",
        ),
        "kernel 6.5 (Ubuntu 22.04 HWE), 23.43, no GPU: not that signature": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()], kernel="6.5.0-45-generic"),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="device-not-found",
            absent={"neo-kernel-gtt"},
            serves_on="CPU",
        ),
        "kernel 6.8, legacy1 (24.35 has the fix), no GPU: not that signature": Case(
            facts(LEGACY1, [LEGACY1_ICD], [node()]),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="device-not-found",
            absent={"neo-kernel-gtt", "runtime-gen12-only"},
            serves_on="CPU",
        ),
        "kernel 6.8, 23.43, keys set, GPU listed: the workaround is in effect": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()], neo_environment=NEO_KEYS),
            WITH_GPU,
            usable=True,
            gpu_usable=True,
            codes={"neo-kernel-gtt-workaround"},
            absent={"neo-kernel-gtt"},
            reason_says="with the kernel 6.8 workaround NEOReadDebugKeys=1",
            structured={
                "id": "neo-kernel-gtt-workaround",
                "severity": "info",
                "remedy_environment": NEO_KEYS,
            },
        ),
        "kernel 6.8, 23.43, keys set, still no GPU": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()], neo_environment=NEO_KEYS),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="neo-kernel-gtt",
            absent={"neo-kernel-gtt-workaround"},
            reason_says="are set here and did not help",
            serves_on="CPU",
        ),
        "kernel 6.8, 23.43, GPU listed without keys: nothing to say": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()]),
            WITH_GPU,
            usable=True,
            gpu_usable=True,
            absent={"neo-kernel-gtt", "neo-kernel-gtt-workaround"},
        ),
        "legacy1 .debs installed without ldconfig": Case(
            facts(LEGACY1, [LEGACY1_ICD], [node()], gpu_libraries=STALE_IGC),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="stale-linker-cache",
            reason_says="libigc.so.1 (/usr/local/lib/libigc.so.1.0.17537.24), libigdfcl.so.1",
            remedy_says="sudo ldconfig",
            serves_on="CPU",
            structured={
                "id": "stale-linker-cache",
                "remedy_command": ["ldconfig"],
                "evidence": {
                    "not_in_ldconfig_cache": [
                        "/usr/local/lib/libigc.so.1.0.17537.24",
                        "/usr/local/lib/libigdfcl.so.1.0.17537.24",
                    ]
                },
            },
        ),
        "uhd630 known by its PCI id only, PPA 25.18": Case(
            facts(PPA_25, [INTEL_ICD], [node(device_id=None)], pci_gpus=[pci("0x3e91")]),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="runtime-gen12-only",
            reason_says="Coffee Lake, Gen9.5",
            serves_on="CPU",
            structured={"remedy_route": "legacy1"},
        ),
        "uhd630, a 24.52 runtime from a tarball (no dpkg), known by its file names": Case(
            facts(
                None,
                [INTEL_ICD],
                [node("0x3e92")],
                gpu_libraries=[
                    GpuLibrary(
                        "/usr/local/lib/libze_intel_gpu.so.1.6.32224.5",
                        "libze_intel_gpu.so.1",
                        True,
                    )
                ],
            ),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="runtime-gen12-only",
            reason_says="libze_intel_gpu.so 1.6.32224.5: regular, 24.35 or later",
            serves_on="CPU",
            structured={"remedy_route": "legacy1"},
        ),
        "nomodeset on the kernel command line": Case(
            facts(
                UBUNTU_2404,
                [INTEL_ICD],
                [],
                pci_gpus=[pci(driver=None)],
                kernel_cmdline=MAC_MINI_CMDLINE + " nomodeset",
                i915_loaded=True,
            ),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="i915-disabled",
            codes={"no-render-node"},
            remedy_says="remove nomodeset from GRUB_CMDLINE_LINUX_DEFAULT",
            serves_on="CPU",
            structured={
                "id": "i915-disabled",
                "evidence": {
                    "kernel_cmdline": MAC_MINI_CMDLINE + " nomodeset",
                    "i915_loaded": True,
                    "gpus": ["0000:00:02.0 0x8086:0x3e9b driver None"],
                },
            },
        ),
        "i915 not loaded, no driver on the GPU": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [], pci_gpus=[pci(driver=None)], i915_loaded=False),
            CPU_ONLY,
            usable=False,
            gpu_usable=False,
            cause="i915-disabled",
            remedy_says="sudo modprobe i915",
            serves_on="CPU",
        ),
        "i915 built in, not a module, GPU bound: fine": Case(
            facts(UBUNTU_2404, [INTEL_ICD], [node()], i915_loaded=False),
            WITH_GPU,
            usable=True,
            gpu_usable=True,
            absent={"i915-disabled"},
        ),
    }
)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_verdict(case: Case) -> None:
    settings = Settings.model_validate({"device": case.device, "fallback_device": "CPU"})
    findings, verdict = judge(settings, case.facts, case.ov, case.probe)
    codes = {f.code for f in findings}
    assert (verdict.usable, verdict.gpu_usable) == (case.usable, case.gpu_usable), findings
    assert verdict.serves_on == case.serves_on
    assert case.codes <= codes, findings
    if case.cause is None:
        assert verdict.remedy is None
        assert not [f for f in findings if f.severity == "error"], findings
    else:
        cause = next(f for f in findings if f.code == case.cause)
        assert cause.severity == "error"
        assert verdict.reason.startswith(f"OV_DEVICE={case.device} cannot serve: {cause.message}")
        assert verdict.remedy == cause.remedy
    if case.remedy_says:
        assert verdict.remedy is not None and case.remedy_says in verdict.remedy
    if case.reason_says:
        assert case.reason_says in verdict.reason
    if verdict.serves_on == "CPU" and not verdict.usable:
        assert verdict.reason.endswith("The service falls back to OV_FALLBACK_DEVICE=CPU")
    assert not case.absent & codes, findings
    if case.structured:
        code = case.cause or min(case.codes)
        reported = finding_dict(next(f for f in findings if f.code == code))
        assert {key: reported[key] for key in case.structured} == case.structured


def test_gpu_findings_are_information_only_for_a_cpu_service() -> None:
    settings = Settings.model_validate({"device": "CPU"})
    findings, verdict = judge(settings, facts(BOOKWORM, [INTEL_ICD], []), CPU_ONLY, None)
    assert verdict.usable
    assert {f.code: f.severity for f in findings} == {"no-render-node": "info"}


@pytest.mark.parametrize(
    ("device", "listed", "available"),
    [
        ("GPU", ["CPU", "GPU"], True),
        ("GPU.0", ["CPU", "GPU"], True),
        ("GPU.1", ["CPU", "GPU"], False),
        ("GPU.1", ["CPU", "GPU.0", "GPU.1"], True),
        ("GPU", ["CPU", "GPU.0", "GPU.1"], True),
        ("GPU", ["CPU"], False),
        ("gpu", ["GPU"], True),
        ("CPU", ["CPU"], True),
        ("AUTO", ["CPU"], True),
        ("AUTO:-CPU", ["CPU"], False),
        ("AUTO:GPU,CPU", ["CPU"], True),
        ("MULTI:GPU,CPU", ["CPU"], True),
        ("HETERO:GPU,CPU", ["CPU"], False),
        ("NPU", ["CPU", "GPU"], False),
        ("GPU.7", ["CPU", "GPU"], False),
    ],
)
def test_device_available(device: str, listed: list[str], available: bool) -> None:
    assert device_available(device, listed) is available


def test_report_of_the_kernel_68_signature() -> None:
    case = CASES["uhd630, kernel 6.8, Ubuntu's 23.43: no GPU enumerated"]
    settings = Settings.model_validate({"device": "GPU", "fallback_device": "CPU"})
    findings, verdict = judge(settings, case.facts, case.ov, None)
    report = Report(settings, case.facts, case.ov, [], None, "--quick", findings, verdict, "", 0.1)
    data = report.to_dict()
    assert [f["id"] for f in data["findings"]] == ["neo-kernel-gtt", "device-not-found"]
    assert data["pci_gpus"][0]["generation"] == "Gen9.5"
    text = report.render()
    assert "[error] neo-kernel-gtt: kernel 6.8.0-49-generic" in text
    assert "PCI 0000:00:02.0" in text and "(Coffee Lake, Gen9.5), driver i915" in text
    assert "fix: set NEOReadDebugKeys=1 OverrideGpuAddressSpace=48" in text
