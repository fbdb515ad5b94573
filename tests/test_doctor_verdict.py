"""The doctor's judgement over hosts it will meet: the UHD 630 with each runtime, the known-bad
combinations, the sandbox and permission failures, a GPU that computes garbage. Pure logic over
facts as the gatherers report them; the gatherers run for real in test_doctor.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ov_llm_server.doctor.facts import IcdFile, Identity, RenderNode, SystemFacts
from ov_llm_server.doctor.probe import ProbeResult
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


def facts(
    packages: dict[str, str] | None,
    icds: list[IcdFile],
    nodes: list[RenderNode],
) -> SystemFacts:
    return SystemFacts(
        os="Ubuntu 24.04.1 LTS",
        kernel="6.8.0-49-generic",
        cpu="Intel(R) Core(TM) i7-8700B CPU @ 3.20GHz",
        memory_gib=31.2,
        python="3.12.3",
        python_packages={"openvino": "2026.4.1"},
        identity=Identity("ov-server", 998, ["ov-server", "render", "video"], True, True, True),
        debian_packages=packages,
        icd_files=icds,
        render_nodes=nodes,
    )


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
        cause="runtime-drops-gpu",
        codes={"device-not-found"},
        remedy_says="23.43 (intel_gpu_runtime_source: distribution)",
        reason_says="cannot drive this Coffee Lake, Gen9.5 GPU",
        serves_on="CPU",
    ),
    "uhd630, PPA 25.18": Case(
        facts(PPA_25, [INTEL_ICD], [node()]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="runtime-drops-gpu",
        remedy_says="legacy1",
        serves_on="CPU",
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
        facts(UBUNTU_2404, [INTEL_ICD], [node(access="EACCES: Permission denied")]),
        CPU_ONLY,
        usable=False,
        gpu_usable=False,
        cause="render-node-denied",
        remedy_says="sudo usermod -aG render ov-server",
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
